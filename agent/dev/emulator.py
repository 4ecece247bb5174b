"""A local Secrets Manager: ``moto_server`` on a free loopback port.

Used by ``secrets-agent demo`` and by the test suite. moto is a demo/test extra,
not a runtime dependency; this module only starts it as a child process.
The child gets its own session so stopping it stops everything it spawned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType

from agent.core.errors import EmulatorError

START_TIMEOUT_SECONDS = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """Start/stop ``moto_server``; usable as a context manager."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Endpoint URL to give boto3 and the agent."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        """Launch the server and wait until it answers (once: a running server is left as it is)."""
        if self.process is not None and self.process.poll() is None:
            # `with MotoServer().start()` starts it again on __enter__: a second process would be
            # launched and the first one, forgotten here, never stopped.
            return self
        try:
            import moto.server  # noqa: F401  (only checking it is installed)
        except ImportError as exc:
            raise EmulatorError(
                "moto is not installed: pip install 'secrets-agent[dev]' (make demo does this)"
            ) from exc
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmulatorError(f"moto_server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise EmulatorError(f"moto_server did not answer on {self.url} within {START_TIMEOUT_SECONDS:.0f}s")

    def reset(self) -> None:
        """Forget every resource (between tests)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        """Terminate the server and its process group; wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        self.stop()
