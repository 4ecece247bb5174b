"""The process environment every test runs in: fake AWS credentials, nothing from the developer's shell."""

from __future__ import annotations

import os

import pytest

REGION = "us-east-1"

# Fake credentials for moto, and never probe instance metadata (a non-loopback
# address) from a test.
TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    # Safety net: any client a test forgets to point at moto hits a closed loopback port, never AWS.
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


def isolate_aws_environment(patch: pytest.MonkeyPatch) -> None:
    """Drop anything that could redirect or re-credential boto3 or configure the agent; set the test values."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SECRETS_AGENT_")):
            patch.delenv(name)
    for name, value in TEST_ENVIRONMENT.items():
        patch.setenv(name, value)
