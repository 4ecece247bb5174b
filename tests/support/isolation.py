"""What makes a unit test a unit test: no network connection, no listener, no child process.

:func:`forbid_network_and_processes` patches ``socket.socket`` and ``subprocess.Popen``
so that connecting, binding or sending to an address (IPv4, IPv6 or a Unix socket)
and starting a process raise :class:`NotAUnitTest`. Sockets from
``socket.socketpair()`` (the event loop's self-pipe) never connect or bind, so
they keep working.

Attempts are also recorded, so that one swallowed by the code under test
(``except Exception``) still fails the test at teardown.

Limits: this sees only sockets made through Python's ``socket`` module and
processes made through ``subprocess`` (asyncio's subprocesses included); uvloop
(libuv) sockets, ``os.fork`` and ``os.posix_spawn`` bypass it. Unit tests run on
the stdlib event loop pytest-asyncio provides.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest

GUARDED_FAMILIES = {socket.AF_INET, socket.AF_INET6, socket.AF_UNIX}


class NotAUnitTest(AssertionError):
    """A unit test tried to use the network or start a process: it belongs in tests/integration."""


def forbid_network_and_processes(patch: pytest.MonkeyPatch) -> list[str]:
    """Install the guards with ``patch``; return the list every refused attempt is appended to."""
    attempts: list[str] = []

    def refuse(what: str) -> NotAUnitTest:
        message = f"unit tests must not {what}; move the test to tests/integration"
        attempts.append(message)
        return NotAUnitTest(message)

    def guard_address(name: str, address_index: int) -> None:
        original = getattr(socket.socket, name)

        def guarded(self: socket.socket, *args: Any) -> Any:
            if self.family in GUARDED_FAMILIES:
                address = args[address_index] if len(args) > address_index else args[-1]
                raise refuse(f"{name}() a {self.family.name} socket to {address!r}")
            return original(self, *args)

        patch.setattr(socket.socket, name, guarded)

    for name in ("connect", "connect_ex", "bind"):
        guard_address(name, 0)
    guard_address("sendto", 1)  # sendto(data, address) or sendto(data, flags, address)

    def no_process(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise refuse(f"start a process ({args!r})")

    # Popen.__init__ has set the object up and closes its pipes when this raises.
    patch.setattr(subprocess.Popen, "_execute_child", no_process)
    return attempts
