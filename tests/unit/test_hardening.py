"""The pure parts of process hardening: reading /proc status text, naming why mlockall failed, the config key.

harden_process itself is never called here: it would make the pytest process
non-dumpable. tests/integration/test_hardening.py runs it in real agent processes.
"""

from __future__ import annotations

import errno
import resource

from agent.config import load_settings
from agent.server.hardening import CAP_IPC_LOCK, has_capability, lock_refusal, render_limit, status_field

STATUS = """Name:\tpython
VmPeak:\t  421508 kB
VmLck:\t   65536 kB
CapInh:\t0000000000000000
CapEff:\t0000000000004000
"""


def test_status_field_reads_kilobytes_and_misses_are_none() -> None:
    """VmLck's number is read; an absent or malformed field is None."""
    assert status_field(STATUS, "VmLck") == 65536
    assert status_field(STATUS, "VmPin") is None
    assert status_field("VmLck:\n", "VmLck") is None
    assert status_field("", "VmLck") is None


def test_has_capability_reads_the_effective_set() -> None:
    """CapEff 0x4000 is CAP_IPC_LOCK (bit 14) and nothing else; no CapEff line means none."""
    assert has_capability(STATUS, CAP_IPC_LOCK)
    assert not has_capability(STATUS, CAP_IPC_LOCK + 1)
    assert not has_capability(STATUS.replace("0000000000004000", "0000000000000000"), CAP_IPC_LOCK)
    assert not has_capability("", CAP_IPC_LOCK)


def test_render_limit() -> None:
    """rlimits are bytes in the log, or "unlimited"."""
    assert render_limit(0) == 0
    assert render_limit(resource.RLIM_INFINITY) == "unlimited"


def test_lock_refusal_names_the_missing_capability_and_limit() -> None:
    """EPERM/ENOMEM without CAP_IPC_LOCK name the capability, the limit and how to grant each."""
    for err in (errno.EPERM, errno.ENOMEM):
        text = lock_refusal(err, 8 * 1024 * 1024, has_ipc_lock=False)
        assert errno.errorcode[err] in text and "8388608 bytes" in text
        assert "CAP_IPC_LOCK" in text and "LimitMEMLOCK" in text and "IPC_LOCK]" in text
        assert "runs on" in text
    other = lock_refusal(errno.EAGAIN, resource.RLIM_INFINITY, has_ipc_lock=True)
    assert "EAGAIN" in other and "unlimited" in other


def test_lock_memory_is_off_by_default_and_settable_from_the_environment() -> None:
    """server.lock_memory: false unless set (file, SECRETS_AGENT_SERVER_LOCK_MEMORY or override)."""
    environ = {"AWS_TOKEN": "t"}
    assert load_settings(None, environ=environ).server.lock_memory is False
    environ["SECRETS_AGENT_SERVER_LOCK_MEMORY"] = "true"
    assert load_settings(None, environ=environ).server.lock_memory is True
