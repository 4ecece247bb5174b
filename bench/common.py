"""What both benchmarks need to start the real agent as a child process."""

from __future__ import annotations

import os
import sys
from typing import Any

import boto3

REGION = "us-east-1"


def moto_client(url: str, service: str = "secretsmanager") -> Any:
    """A boto3 client for the local moto server (it accepts any credentials)."""
    return boto3.client(
        service, region_name=REGION, endpoint_url=url, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


def agent_env(token: str, settings: dict[str, str]) -> dict[str, str]:
    """A clean environment: fake credentials for moto, no metadata probing, the token, and settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_AGENT_", "AWS_"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_TOKEN": token,
        }
    )
    env.update({f"SECRETS_AGENT_{key.upper()}": value for key, value in settings.items()})
    return env


def agent_command(port: int, endpoint: str, *, cpu: str | None = None) -> list[str]:
    """``python -m agent run`` on ``port`` against ``endpoint``, optionally pinned to ``cpu``."""
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    return [
        *pin,
        sys.executable,
        "-m",
        "agent",
        "run",
        "--http-port",
        str(port),
        "--endpoint-url",
        endpoint,
        "--region",
        REGION,
    ]
