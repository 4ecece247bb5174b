"""What a default agent loads: only the libraries a run uses (memory: see README "Benchmark")."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.agent import cli_environment

# Build the agent as `secrets-agent run` does (no listener, no network call), then report what is loaded.
PROBE = """
import json, sys
import agent.cli.main  # what `secrets-agent run` imports first
from agent.config import load_settings
from agent.server.lifecycle import Agent
agent = Agent(load_settings(overrides={"aws.region": "us-east-1", "aws.endpoint_url": "http://127.0.0.1:9"}))
loader = agent.clients.secretsmanager._loader
services = sorted({name for p in loader.load_data("endpoints")["partitions"] for name in p["services"]})
heavy = ("boto3", "s3transfer", "jinja2", "agent.delivery.templates", "rich", "colorama")
loaded = [m for m in heavy if m in sys.modules]
import rich  # hidden from structlog only: still there for anyone who asks
print(json.dumps({"loaded": loaded, "services": services}))
"""


def test_default_agent_loads_only_what_it_uses() -> None:
    """A default agent imports no boto3, Jinja2, rich or colorama, and keeps endpoint data for its services only."""
    env = cli_environment({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["loaded"] == []
    assert "secretsmanager" in report["services"] and "s3" not in report["services"]
    assert len(report["services"]) <= 7
