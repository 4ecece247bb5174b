"""The sd_notify watchdog's schedule, with the sends recorded and the sleeps faked.

tests/integration/test_delivery.py::test_sd_notify checks the datagrams reach a real
socket; the interval is pinned here, where no loaded machine can stretch it.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from agent.config.delivery import SystemdSettings
from agent.delivery import notify


class Recorded(notify.Notifier):
    """A Notifier whose datagrams are kept instead of sent."""

    def __init__(self, settings: SystemdSettings) -> None:
        super().__init__(settings)
        self.sent: list[tuple[str, ...]] = []

    def send(self, *lines: str) -> bool:
        self.sent.append(lines)
        return True


async def test_watchdog_pings_every_half_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG=1 goes out at once and then after every sleep of half WATCHDOG_USEC."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError

    monkeypatch.setattr(notify, "asyncio", SimpleNamespace(sleep=fake_sleep))
    notifier = Recorded(SystemdSettings(notify_socket="/run/systemd/notify", watchdog_usec=400_000))
    with pytest.raises(asyncio.CancelledError):
        await notifier.watchdog()
    assert sleeps == [0.2, 0.2, 0.2]
    assert notifier.sent == [("WATCHDOG=1",)] * 3


async def test_no_watchdog_unless_asked() -> None:
    """Without WATCHDOG_USEC (or without a socket) the watchdog returns at once and sends nothing."""
    for settings in (
        SystemdSettings(notify_socket="/run/systemd/notify"),
        SystemdSettings(watchdog_usec=400_000),
    ):
        notifier = Recorded(settings)
        await notifier.watchdog()
        assert notifier.sent == []
