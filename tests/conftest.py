"""Fixtures for every test: an isolated AWS environment and the agent's logging set up for capture.

Helpers live in :mod:`tests.support`; this file only defines fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.environment import isolate_aws_environment


@pytest.fixture(scope="session", autouse=True)
def aws_environment() -> Iterator[None]:
    """Fake credentials, no instance metadata, nothing from the developer's shell; restored at the end."""
    with pytest.MonkeyPatch.context() as patch:
        isolate_aws_environment(patch)
        yield


@pytest.fixture(scope="session", autouse=True)
def agent_logging() -> None:
    """Configure the agent's logging uncached, so structlog.testing.capture_logs works in tests."""
    from agent.core import log as agent_log

    agent_log.configure("debug", "json", cache=False)
