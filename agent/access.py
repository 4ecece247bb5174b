"""Who is calling: the shared token, checked in constant time.

The token comes from ``auth.token``: an environment variable's value (fixed at
start) or a file. A file token is re-read when its mtime or size changes
(checked at most once a second), so it can be rotated without a restart.
A candidate is accepted from any configured header or from
``Authorization: Bearer <token>``; every candidate is compared with
``hmac.compare_digest`` and all are compared, so timing says nothing about
which header matched or how much of a wrong token was right.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Mapping

from agent.config import AuthSettings
from agent.log import get_logger

log = get_logger("agent.access")

FILE_CHECK_INTERVAL_SECONDS = 1.0
DEFAULT_CLIENT = "default"


class Authenticator:
    """Validates the token a request presents."""

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ref = settings.token
        self._headers = settings.headers
        self._clock = clock
        self._token: bytes = b""
        self._file_sig: tuple[int, int] | None = None
        self._next_check = 0.0
        if self._ref.kind == "env":
            self._token = (self._ref.value or "").encode()
        else:
            self._reload_file(force=True)

    def _reload_file(self, *, force: bool = False) -> None:
        path = self._ref.location
        try:
            info = os.stat(path)
            sig = (info.st_mtime_ns, info.st_size)
            if not force and sig == self._file_sig:
                return
            with open(path, "rb") as fh:
                token = fh.read().strip()
        except OSError as exc:
            # Keep the last good token: a half-done rotation must not lock everyone out.
            log.warning("token_file_unreadable", path=path, reason=exc.strerror)
            return
        if not token:
            log.warning("token_file_empty", path=path)
            return
        if self._token and token != self._token:
            log.info("token_file_reloaded", path=path)
        self._token = token
        self._file_sig = sig

    def _current(self) -> bytes:
        if self._ref.kind == "file":
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + FILE_CHECK_INTERVAL_SECONDS
                self._reload_file()
        return self._token

    def identify(self, headers: Mapping[str, str]) -> str | None:
        """The client name if a presented token is valid, else None."""
        expected = self._current()
        candidates = [headers.get(name) for name in self._headers]
        auth = headers.get("Authorization")
        if auth and auth[:7].lower() == "bearer ":
            candidates.append(auth[7:].strip())
        ok = False
        for candidate in candidates:
            if candidate is not None:
                ok |= hmac.compare_digest(candidate.encode(), expected)
        return DEFAULT_CLIENT if ok else None
