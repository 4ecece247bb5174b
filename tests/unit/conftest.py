"""Fixtures for unit tests: pure logic, so any network use or child process fails the test loudly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.isolation import forbid_network_and_processes


@pytest.fixture(autouse=True)
def no_network_or_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse connect/bind/sendto on IP and Unix sockets and subprocess.Popen; fail even if the error was swallowed."""
    attempts = forbid_network_and_processes(monkeypatch)
    yield
    if attempts:
        pytest.fail("\n".join(attempts), pytrace=False)
