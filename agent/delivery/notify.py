"""systemd ``Type=notify`` support over the documented datagram protocol (sd_notify(3)).

No library: the protocol is one ``sendto`` of ``KEY=VALUE`` lines to the
``AF_UNIX`` datagram socket named by ``NOTIFY_SOCKET`` (a leading ``@`` means
the abstract namespace). ``READY=1`` is sent once prefetch and the first
template render are done, ``STOPPING=1`` when shutdown starts, and
``WATCHDOG=1`` every half ``WATCHDOG_USEC`` when systemd asks for a watchdog.
Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import asyncio
import socket

from agent.config.delivery import SystemdSettings
from agent.core.log import get_logger

log = get_logger("agent.delivery.notify")


class Notifier:
    """Sends state changes to systemd, if it is listening."""

    def __init__(self, settings: SystemdSettings) -> None:
        self._address = settings.notify_socket
        self._watchdog_usec = settings.watchdog_usec
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket."""
        return bool(self._address)

    def send(self, *lines: str) -> bool:
        """Send one notification; False (logged) if it could not be delivered."""
        if not self._address:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", reason=exc.strerror)
            return False
        return True

    def ready(self, status: str = "serving") -> None:
        """READY=1: units ordered after us may start."""
        self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        """STOPPING=1: shutdown has begun."""
        self.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self) -> None:
        """Ping the watchdog every half interval until cancelled (returns at once if none asked)."""
        if not self._address or not self._watchdog_usec:
            return
        interval = self._watchdog_usec / 2_000_000
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)
