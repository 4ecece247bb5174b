"""Opening the listeners: TCP on loopback, and the Unix socket with a tight mode from the first instant."""

from __future__ import annotations

import os
import socket
import stat

from aiohttp import web

from agent.core.errors import ListenerError
from agent.core.log import get_logger

log = get_logger("agent.listeners")

# aiohttp's UnixSite does not chmod the socket: it is bound under this umask,
# so it is never more open than owner read/write, then set to the configured mode.
BIND_UMASK = 0o177


async def start_tcp(runner: web.AppRunner, host: str, port: int) -> None:
    """Listen on ``host:port``; a taken port is a :class:`ListenerError`."""
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        raise ListenerError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def prepare_socket_path(path: str) -> None:
    """Remove a stale socket file; refuse if something live listens there or it is not a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenerError(f"server.unix_socket: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: a leftover from a crashed run
        log.info("stale_socket_removed", path=path)
        return
    finally:
        probe.close()
    raise ListenerError(f"server.unix_socket: another process is listening on {path}")


async def start_unix(runner: web.AppRunner, path: str, mode: int) -> None:
    """Listen on a Unix socket at ``path`` with file mode ``mode``."""
    prepare_socket_path(path)
    previous = os.umask(BIND_UMASK)
    try:
        await web.UnixSite(runner, path).start()
    finally:
        os.umask(previous)
    os.chmod(path, mode)
