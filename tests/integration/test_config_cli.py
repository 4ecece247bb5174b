"""Configuration through the CLI: `check-config` and `run` refusing bad settings, as a process."""

from __future__ import annotations

from tests.support.agent import TOKEN, run_cli
from tests.support.configs import expected_keys
from tests.support.paths import CONFIG, INVALID_CONFIGS


def test_check_config_cli_ok() -> None:
    """`check-config` exits 0 on the example config."""
    result = run_cli(["check-config", "--config", str(CONFIG / "agent.toml")])
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_check_config_cli_lists_every_problem() -> None:
    """`check-config` exits 2 and names every offending key in one message."""
    path = INVALID_CONFIGS / "many_problems.toml"
    result = run_cli(["check-config", "--config", str(path)])
    assert result.returncode == 2
    for key in expected_keys(path):
        assert key in result.stderr


def test_run_refuses_non_loopback_cli() -> None:
    """`run --http-host 0.0.0.0` exits 2 before binding, saying loopback."""
    result = run_cli(["run", "--http-host", "0.0.0.0"])
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_run_refuses_without_token() -> None:
    """`run` without a resolvable token exits 2 and says how to provide one."""
    result = run_cli(["run"], extra_env={"AWS_TOKEN": ""})
    assert result.returncode == 2
    assert "auth.token" in result.stderr and "file:///" in result.stderr
