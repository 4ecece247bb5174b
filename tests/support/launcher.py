"""Start a command with chosen rlimits and, optionally, no capabilities; or read another process's memory.

``python tests/support/launcher.py [--core N] [--memlock N] [--no-capabilities] -- CMD ...``
sets the soft limits (never above the hard ones), empties the capability
bounding set (so that even root execs ``CMD`` with no capabilities, as the
shipped systemd unit runs the agent) and execs ``CMD``. The test process's own
limits and capabilities stay as they are.

``python tests/support/launcher.py --no-capabilities -- --scan PID NEEDLE`` is
the attacker of issue 10: a process with the agent's uid and no capabilities
reading the agent's memory through ``/proc/PID/mem``. It prints ``found N`` (N
copies of NEEDLE) or ``refused <error>``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys

PR_CAPBSET_DROP = 24
CAPSET_VERSION_3 = 0x20080522
SCAN_CHUNK = 1 << 20


def launcher(*, core: int | None = None, memlock: int | None = None, no_capabilities: bool = False) -> list[str]:
    """The argv prefix that runs what follows it under these conditions."""
    argv = [sys.executable, __file__]  # by path: it imports only the standard library, whatever the cwd
    if core is not None:
        argv += ["--core", str(core)]
    if memlock is not None:
        argv += ["--memlock", str(memlock)]
    if no_capabilities:
        argv.append("--no-capabilities")
    return [*argv, "--"]


def has_capabilities() -> bool:
    """Whether this process has any effective capability."""
    with open("/proc/self/status") as fh:
        return any(line.startswith("CapEff:") and int(line.split()[1], 16) for line in fh)


def _set_soft(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and (value == resource.RLIM_INFINITY or value > hard):
        value = hard  # a soft limit cannot exceed the hard one
    resource.setrlimit(which, (value, hard))


def _drop_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last = int(fh.read())
    if has_capabilities():
        for cap in range(last + 1):
            libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    header = (ctypes.c_uint32 * 2)(CAPSET_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _scan(pid: int, needle: bytes) -> str:
    try:
        with open(f"/proc/{pid}/maps") as maps_file:
            maps = maps_file.read().splitlines()
        found = 0
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for line in maps:
                fields = line.split()
                if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                    continue
                start, end = (int(part, 16) for part in fields[0].split("-"))
                overlap = b""
                for offset in range(start, end, SCAN_CHUNK):
                    try:
                        mem.seek(offset)
                        chunk = overlap + mem.read(min(SCAN_CHUNK, end - offset))
                    except OSError:
                        break  # a mapping that cannot be read (I/O regions and the like)
                    found += chunk.count(needle)
                    overlap = chunk[-(len(needle) - 1) :] if len(needle) > 1 else b""
        return f"found {found}"
    except OSError as exc:
        return f"refused {exc}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--core", type=int)
    parser.add_argument("--memlock", type=int)
    parser.add_argument("--no-capabilities", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.core is not None:
        _set_soft(resource.RLIMIT_CORE, args.core)
    if args.memlock is not None:
        _set_soft(resource.RLIMIT_MEMLOCK, args.memlock)
    if args.no_capabilities:
        _drop_capabilities()
    if command[:1] == ["--scan"]:
        print(_scan(int(command[1]), command[2].encode()), flush=True)
        return
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
