"""The moto_server wrapper the tests, the demo and the benches use leaves no process behind."""

from __future__ import annotations

import subprocess

from agent.dev.emulator import MotoServer


def serving(port: int) -> list[str]:
    """Pids of moto_server processes started for ``port``."""
    found = subprocess.run(
        ["pgrep", "-f", f"moto.server -H 127.0.0.1 -p {port}$"], capture_output=True, text=True, check=False
    )
    return found.stdout.split()


def test_started_then_entered_runs_one_server_and_stops_it() -> None:
    """`with MotoServer().start()` (start, then __enter__) runs one process, and none after the block."""
    with MotoServer().start() as moto:
        assert moto.process is not None
        assert serving(moto.port) == [str(moto.process.pid)]
    assert serving(moto.port) == []
