"""Free heap pages go back to the kernel after prefetch where glibc can do it, and nothing breaks elsewhere."""

from __future__ import annotations

import ctypes
import platform

import pytest

from agent.server import memory


@pytest.fixture(autouse=True)
def fresh_lookup() -> None:
    """Each test looks malloc_trim up again."""
    memory._malloc_trim.cache_clear()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_runs_on_glibc() -> None:
    """On glibc the agent finds malloc_trim and calls it."""
    assert memory.release_free_memory() is True


def test_without_malloc_trim_nothing_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """A C library without malloc_trim (musl, macOS) leaves memory as it is and raises nothing."""

    class NoTrim:
        def __init__(self, _name: object) -> None:
            pass

        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    assert memory.release_free_memory() is False
