"""What the cache remembers about failed reads: backoff after transient faults, and missing secrets.

Two records per key (a secret id as asked plus the version asked for):

- *backoff*: after a transient fault (throttling, 5xx, timeouts) the key is not
  asked upstream again until its backoff (exponential, full jitter) expires;
  reads in between get the cached value (stale-if-error) or the same error.
- *negative*: after ``ResourceNotFoundException`` the key answers 404 without
  an upstream call for ``negative_ttl_seconds``, so an app polling for a secret
  that does not exist (yet) costs one call per interval, not one per read; a
  secret created meanwhile is seen within that bound, and ``refreshNow``
  bypasses it.

Both are bounded: at most ``max_records`` keys, the least recently failed
dropped first; an expired negative record is dropped when met. The errors kept
are detached copies (no traceback, no ``__cause__``): a botocore exception
chain holds the worker thread's frames and the whole HTTP response, and
keeping one per failing id cost about 26 kB each during an outage. Each read
gets a fresh copy to raise, since raising an exception appends the raiser's
frames to it: re-raising one stored object kept every reader's frames alive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.core.errors import SecretNotFound, UpstreamError
from agent.upstream.throttle import Backoff

READ_BACKOFF_BASE_SECONDS = 1.0
READ_BACKOFF_CAP_SECONDS = 60.0

Key = tuple[str, ...]  # (secret id as asked, version suffix)


def detached(error: UpstreamError) -> UpstreamError:
    """A copy of ``error`` with the same class, message and code, and no traceback or cause."""
    copy = type(error)(error.message, code=error.code)
    copy.__suppress_context__ = True
    return copy


@dataclass
class _Record:
    error: UpstreamError
    until: float  # backoff: when the key may be asked again; negative: when the 404 expires
    backoff: Backoff | None = None  # None for a negative record


class FailureBook:
    """Bounded per-key failure records (see the module docstring)."""

    def __init__(
        self,
        *,
        max_records: int,
        negative_ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_records
        self._negative_ttl = negative_ttl_seconds
        self._clock = clock
        self._records: OrderedDict[Key, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def blocked(self, key: Key) -> UpstreamError | None:
        """The last transient error while ``key`` is backing off, else None."""
        record = self._records.get(key)
        if record is None or record.backoff is None:
            return None
        if self._clock() < record.until:
            return detached(record.error)  # a fresh copy: a raised exception collects the raiser's frames
        return None

    def missing(self, key: Key) -> UpstreamError | None:
        """The remembered ``ResourceNotFoundException`` while it is fresh, else None."""
        record = self._records.get(key)
        if record is None or record.backoff is not None:
            return None
        if self._clock() < record.until:
            return detached(record.error)
        del self._records[key]  # expired: the next read asks upstream
        return None

    def note(self, key: Key, error: UpstreamError) -> None:
        """Remember a failed read: backoff for a transient fault, a negative entry for not-found."""
        now = self._clock()
        if error.transient:
            record = self._records.get(key)
            backoff = record.backoff if record is not None and record.backoff is not None else None
            backoff = backoff or Backoff(READ_BACKOFF_BASE_SECONDS, READ_BACKOFF_CAP_SECONDS)
            self._store(key, _Record(detached(error), now + backoff.next_delay(), backoff))
        elif isinstance(error, SecretNotFound) and self._negative_ttl > 0:
            self._store(key, _Record(detached(error), now + self._negative_ttl))
        else:
            self._records.pop(key, None)

    def clear(self, key: Key) -> None:
        """The key read fine: forget its failures."""
        self._records.pop(key, None)

    def _store(self, key: Key, record: _Record) -> None:
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)
