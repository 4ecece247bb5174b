"""The Host check's parsing: loopback names and addresses pass, look-alikes and junk do not."""

from __future__ import annotations

import pytest

from agent.server.middleware import host_name, is_loopback_name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:2773", "localhost"),
        ("localhost.", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:2773", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[::1]evil.example", None),
        ("localhost:http", None),
        ("", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    """The host part of a Host header, or None when it is not a host with an optional port."""
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("name", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_names(name: str, loopback: bool) -> None:
    """Only localhost and loopback addresses (IPv4-mapped included) count as loopback."""
    assert is_loopback_name(name) is loopback
