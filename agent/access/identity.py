"""Who is calling: tokens (constant-time), Unix peer credentials, and per-client rate limits.

Identities are the ``default`` client (the shared ``auth.token``, if set) and
every ``[[clients]]`` entry. A client is recognised by any one of: a token it
presents (in a configured header or ``Authorization: Bearer``), or, on the Unix
socket, the peer's uid or gid from the kernel (``SO_PEERCRED``).

Every presented candidate is compared with every client token through
``hmac.compare_digest`` and no comparison is skipped, so timing reveals neither
which client matched nor how much of a wrong token was right. Token files are
re-read when their mtime or size changes (checked at most once a second) and
on SIGHUP (:meth:`Authenticator.reload`); a file that is briefly unreadable or
empty keeps its last good token.
"""

from __future__ import annotations

import hmac
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.config import AuthSettings
from agent.config.access import DEFAULT_CLIENT, ClientSettings, TokenRef
from agent.core.log import get_logger

log = get_logger("agent.access.identity")

FILE_CHECK_INTERVAL_SECONDS = 1.0
# (token epoch, when a token file is next due for a look): see Authenticator.settled.
Settled = tuple[int, float]
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    """The process on the other end of a Unix socket connection."""

    pid: int
    uid: int
    gid: int


def peer_credentials(transport: Any) -> Peer | None:
    """``SO_PEERCRED`` of a Unix socket transport (Linux), else None."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid)


class TokenSource:
    """The current value of one token: fixed (env) or a file watched for changes."""

    def __init__(self, ref: TokenRef, clock: Callable[[], float], on_change: Callable[[], None] = lambda: None) -> None:
        self._ref = ref
        self._clock = clock
        self._on_change = on_change
        self._token = (ref.value or "").encode() if ref.kind == "env" else b""
        self._sig: tuple[int, int] | None = None
        self._next_check = 0.0
        if ref.kind == "file":
            self.reload(force=True)

    def reload(self, *, force: bool = False) -> None:
        """Re-read a token file if it changed (always with ``force``)."""
        if self._ref.kind != "file":
            return
        path = self._ref.location
        try:
            info = os.stat(path)
            sig = (info.st_mtime_ns, info.st_size)
            if not force and sig == self._sig:
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
        if token != self._token:
            self._on_change()
        self._token = token
        self._sig = sig

    @property
    def next_check(self) -> float:
        """When :meth:`current` will next look at the file (infinity for a fixed token)."""
        return self._next_check if self._ref.kind == "file" else math.inf

    def current(self) -> bytes:
        """The token now, re-checking a file at most once a second."""
        if self._ref.kind == "file":
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + FILE_CHECK_INTERVAL_SECONDS
                self.reload()
        return self._token


@dataclass(frozen=True)
class Identification:
    """Who the caller is (None: nobody), how we know, or why not."""

    client: str | None
    how: str  # token, uid, gid; or for failures: missing_token, wrong_token, unknown_peer


class Authenticator:
    """Maps a request's headers and peer credentials to a client name."""

    def __init__(
        self,
        settings: AuthSettings,
        clients: Sequence[ClientSettings] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._headers = settings.headers
        self._clock = clock
        self._epoch = 0  # moves whenever any token changes
        self._tokens: list[tuple[str, TokenSource]] = []
        if settings.token is not None:
            self._tokens.append((DEFAULT_CLIENT, TokenSource(settings.token, clock, self._token_changed)))
        for client in clients:
            if client.token is not None:
                self._tokens.append((client.name, TokenSource(client.token, clock, self._token_changed)))
        self._by_name = dict(self._tokens)
        self._by_token = {name: Identification(name, "token") for name, _source in self._tokens}  # made once
        self._by_uid = {c.uid: c.name for c in clients if c.uid is not None}
        self._by_gid = {c.gid: c.name for c in clients if c.gid is not None}

    @property
    def header_names(self) -> tuple[str, ...]:
        """The request headers :meth:`identify` reads (the configured token headers and ``Authorization``)."""
        return (*self._headers, "Authorization")

    def secret_for(self, client: str) -> str | None:
        """A client's current token (the SigV4 secret access key), or None for unknown names."""
        source = self._by_name.get(client)
        token = source.current() if source is not None else b""
        return token.decode("utf-8", "surrogateescape") if token else None

    def reload(self) -> None:
        """Re-read every token file now (SIGHUP)."""
        for _name, source in self._tokens:
            source.reload(force=True)

    def _token_changed(self) -> None:
        self._epoch += 1

    def settled(self) -> Settled:
        """What :meth:`identify` rests on now: it answers the same input the same while :meth:`holds` says so."""
        return self._epoch, min((source.next_check for _name, source in self._tokens), default=math.inf)

    def holds(self, settled: Settled) -> bool:
        """True while no token changed since ``settled`` and no token file is due for a look."""
        epoch, until = settled
        return epoch == self._epoch and (until == math.inf or self._clock() < until)

    def identify(self, headers: Mapping[str, str], peer: Peer | None = None) -> Identification:
        """Recognise the caller by token first, then (Unix socket) by uid, then gid."""
        # aiohttp decodes header bytes with surrogateescape: encode the same way, never fail.
        candidates = []
        for header in self._headers:
            value = headers.get(header)
            if value:
                candidates.append(value.encode("utf-8", "surrogateescape"))
        auth = headers.get("Authorization")
        if auth and auth[:7].lower() == "bearer ":
            candidates.append(auth[7:].strip().encode("utf-8", "surrogateescape"))
        matched: str | None = None
        for name, source in self._tokens:
            expected = source.current()
            for candidate in candidates:
                # Every comparison runs; only the first match is kept.
                if hmac.compare_digest(candidate, expected) and matched is None:
                    matched = name
        if matched is not None:
            return self._by_token[matched]
        if peer is not None:
            if peer.uid in self._by_uid:
                return Identification(self._by_uid[peer.uid], "uid")
            if peer.gid in self._by_gid:
                return Identification(self._by_gid[peer.gid], "gid")
        if candidates:
            return Identification(None, "wrong_token")
        return Identification(
            None, "unknown_peer" if peer is not None and (self._by_uid or self._by_gid) else "missing_token"
        )


class RateLimiter:
    """Per-client token buckets (``rate_per_second``, burst of one second's worth)."""

    def __init__(self, clients: Sequence[ClientSettings], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rates = {c.name: c.rate_per_second for c in clients if c.rate_per_second}
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill)
        self._clock = clock

    def allow(self, client: str) -> bool:
        """Take one token from ``client``'s bucket; False when it is empty."""
        rate = self._rates.get(client)
        if rate is None:
            return True
        now = self._clock()
        capacity = max(1.0, rate)
        tokens, last = self._buckets.get(client, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        return True
