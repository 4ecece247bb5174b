"""Hand the heap's free pages back to the kernel once prefetch is over.

Prefetch parses every ListSecrets page and BatchGetSecretValue reply at once,
then drops them: glibc keeps the freed memory for reuse, so the agent's RSS
would stay at that start-up peak for its whole life. ``malloc_trim(0)`` returns
every free page of every malloc arena (not only the top of the heap) to the
kernel; with 1000 secrets cached that is about 0.5 MiB. Elsewhere than glibc
(musl, macOS) there is no ``malloc_trim`` and this does nothing.

glibc's other knob, ``MALLOC_ARENA_MAX``, was measured and left alone: the
agent's few worker threads use a few small arenas, and capping them saved
nothing measurable.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # The symbols already loaded into this process: the C library's among them.
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no such symbol: not glibc
        return None
    return trim


def release_free_memory() -> bool:
    """``malloc_trim(0)`` where the C library has it; True if it ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
