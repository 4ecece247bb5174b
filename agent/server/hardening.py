"""Keep secret values inside the process: not dumpable, no core file, optionally locked in RAM.

:func:`harden_process` runs once, at the start of a process that will hold
secret values and before any is fetched: :func:`agent.server.lifecycle.run`
(``secrets-agent run``) and ``secrets-agent exec``. Never inside
:class:`~agent.server.lifecycle.Agent`: the test suite runs agents in the pytest
process, which must stay dumpable.

- ``prctl(PR_SET_DUMPABLE, 0)``: another process of the same uid without
  CAP_SYS_PTRACE can no longer ptrace the agent or open its ``/proc/<pid>/mem``,
  ``maps`` or ``environ``, and the kernel writes no core file for it. execve
  resets the flag, so a child started by ``exec`` is dumpable again.
- ``RLIMIT_CORE`` soft and hard 0: no core file even should the process become
  dumpable again. ``run`` only: rlimits survive execve, and ``exec`` leaves its
  child's limits as it found them. When the limit is already 0 (systemd's
  ``LimitCORE=0``) nothing is called.
- ``mlockall(MCL_CURRENT | MCL_FUTURE)`` with ``[server] lock_memory``: no page
  of the process is written to swap. Needs CAP_IPC_LOCK or an RLIMIT_MEMLOCK
  above the process's size; the kernel checks its mapped (virtual) size, not
  its resident size, and every mapped page becomes resident.

A step the kernel refuses is a warning naming what is missing, and the process
carries on. One ``process_hardening`` line reports what holds, read back from
the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import resource
from dataclasses import dataclass
from typing import Any

from agent.core.log import get_logger

log = get_logger("agent.hardening")

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
MCL_CURRENT = 1
MCL_FUTURE = 2
CAP_IPC_LOCK = 14
PROC_STATUS = "/proc/self/status"
MEMLOCK_FIX = (
    "grant CAP_IPC_LOCK (systemd: AmbientCapabilities=CAP_IPC_LOCK; Kubernetes: capabilities.add: [IPC_LOCK]) "
    "or raise RLIMIT_MEMLOCK above the process's size (systemd: LimitMEMLOCK=infinity)"
)


@dataclass(frozen=True)
class Hardening:
    """What holds after :func:`harden_process`, as the kernel reports it."""

    dumpable: int | None  # PR_GET_DUMPABLE; None where prctl does not exist
    core_limit: tuple[int, int]  # RLIMIT_CORE soft, hard (resource.RLIM_INFINITY for none)
    locked_kb: int | None  # VmLck; None where /proc/self/status does not exist

    @property
    def memory_locked(self) -> bool:
        """Whether any memory is locked (VmLck > 0)."""
        return bool(self.locked_kb)


def harden_process(*, core_limit: bool = True, lock_memory: bool = False) -> Hardening:
    """Make this process non-dumpable, then (``core_limit``) forbid core files, then (``lock_memory``) mlockall."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = getattr(libc, "prctl", None)
    if prctl is None:
        log.warning("not_dumpable_failed", detail="prctl does not exist on this platform")
    elif prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        log.warning("not_dumpable_failed", detail=f"prctl(PR_SET_DUMPABLE, 0) refused: {_errno_text()}")
    if core_limit:
        _forbid_core_files()
    if lock_memory:
        _lock_memory(libc)
    state = Hardening(
        dumpable=_dumpable(prctl),
        core_limit=resource.getrlimit(resource.RLIMIT_CORE),
        locked_kb=status_field(_read_status(), "VmLck"),
    )
    log.info(
        "process_hardening",
        dumpable=state.dumpable,
        core_limit_soft=render_limit(state.core_limit[0]),
        core_limit_hard=render_limit(state.core_limit[1]),
        memory_locked=state.memory_locked,
        locked_kb=state.locked_kb,
    )
    return state


def _forbid_core_files() -> None:
    try:
        if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):  # LimitCORE=0: already so, call nothing
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        log.warning(
            "core_limit_not_set",
            detail=f"setrlimit(RLIMIT_CORE, 0) refused: {exc}; set it before the agent starts "
            "(systemd: LimitCORE=0; shell: ulimit -c 0)",
        )


def _lock_memory(libc: Any) -> None:
    mlockall = getattr(libc, "mlockall", None)
    if mlockall is None:
        log.warning("memory_not_locked", detail="mlockall does not exist on this platform")
        return
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    has_ipc_lock = has_capability(_read_status(), CAP_IPC_LOCK)
    if mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.warning("memory_not_locked", detail=lock_refusal(ctypes.get_errno(), memlock[0], has_ipc_lock))
    elif not has_ipc_lock and memlock[0] != resource.RLIM_INFINITY:
        log.warning(
            "memory_lock_bounded",
            detail=f"memory is locked without CAP_IPC_LOCK: allocations past RLIMIT_MEMLOCK "
            f"({render_limit(memlock[0])} bytes) will fail; {MEMLOCK_FIX}",
        )


def _dumpable(prctl: Any) -> int | None:
    if prctl is None:
        return None
    value = prctl(PR_GET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return int(value) if value >= 0 else None


def _read_status() -> str:
    try:
        with open(PROC_STATUS, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _errno_text() -> str:
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


# ---------------------------------------------------------------------- pure parts


def status_field(status: str, name: str) -> int | None:
    """The number in ``name:`` of a ``/proc/<pid>/status`` text (``VmLck: 1234 kB`` → 1234); None if absent."""
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key == name:
            words = rest.split()
            return int(words[0]) if words and words[0].isdigit() else None
    return None


def has_capability(status: str, capability: int) -> bool:
    """Whether ``CapEff`` in a ``/proc/<pid>/status`` text holds ``capability`` (a bit number)."""
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key == "CapEff":
            return bool(int(rest.strip() or "0", 16) >> capability & 1)
    return False


def render_limit(value: int) -> int | str:
    """An rlimit for a log line: bytes, or ``"unlimited"``."""
    return "unlimited" if value == resource.RLIM_INFINITY else value


def lock_refusal(err: int, memlock_soft: int, has_ipc_lock: bool) -> str:
    """Why ``mlockall`` failed with ``err``, naming what is missing and how to grant it."""
    name = errno.errorcode.get(err, str(err))
    limit = render_limit(memlock_soft)
    if err in (errno.EPERM, errno.ENOMEM) and not has_ipc_lock:
        return (
            f"mlockall refused ({name}): no CAP_IPC_LOCK and RLIMIT_MEMLOCK ({limit} bytes) is below "
            f"the process's mapped size; {MEMLOCK_FIX}; the agent runs on with its memory swappable"
        )
    return f"mlockall failed ({name}, RLIMIT_MEMLOCK {limit} bytes); the agent runs on with its memory swappable"
