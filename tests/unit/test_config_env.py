"""Every [section] key, [exec] included, can be set from SECRETS_AGENT_<SECTION>_<KEY>; arrays of tables cannot."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import EnvRef, load_settings
from agent.config.schema import SCHEMA
from agent.core.errors import ConfigError
from tests.support.configs import write_token

ENV = {"AWS_TOKEN": "t0ken"}


def test_exec_keys_from_the_environment() -> None:
    """[exec] command, env, on_change, signal, grace_seconds and check_seconds come from SECRETS_AGENT_EXEC_*."""
    settings = load_settings(
        environ={
            **ENV,
            "SECRETS_AGENT_EXEC_COMMAND": "myapp --port 8080 --name 'a b'",
            "SECRETS_AGENT_EXEC_ENV": "DB_PASSWORD=prod/db#password,API_KEY=prod/api-key",
            "SECRETS_AGENT_EXEC_ON_CHANGE": "signal",
            "SECRETS_AGENT_EXEC_SIGNAL": "sigusr1",
            "SECRETS_AGENT_EXEC_GRACE_SECONDS": "2.5",
            "SECRETS_AGENT_EXEC_CHECK_SECONDS": "1",
        }
    )
    assert settings.exec.command == ("myapp", "--port", "8080", "--name", "a b")
    assert settings.exec.env == (EnvRef("DB_PASSWORD", "prod/db", "password"), EnvRef("API_KEY", "prod/api-key"))
    assert (settings.exec.on_change, settings.exec.signal) == ("signal", "SIGUSR1")
    assert (settings.exec.grace_seconds, settings.exec.check_seconds) == (2.5, 1.0)
    as_json = load_settings(environ={**ENV, "SECRETS_AGENT_EXEC_COMMAND": '["sh", "-c", "echo a,b"]'})
    assert as_json.exec.command == ("sh", "-c", "echo a,b")


def test_every_schema_key_has_an_environment_variable() -> None:
    """Each key of the schema is accepted as SECRETS_AGENT_<SECTION>_<KEY> (a value of the right kind)."""
    samples = {"unix_socket_mode": "0600", "token": "env:AWS_TOKEN", "format": "json", "headers": "X-Vault-Token"}
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            default = spec.default
            if key in samples:
                value = samples[key]
            elif isinstance(default, bool):
                value = str(default).lower()
            elif isinstance(default, int | float | str):
                value = str(default)
            else:
                value = ""
            name = f"SECRETS_AGENT_{section.upper()}_{key.upper()}"
            load_settings(environ={**ENV, name: value})  # no "unknown setting" problem


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("SECRETS_AGENT_EXEC_SIGNAL", "SIG_IGN"),
        ("SECRETS_AGENT_EXEC_SIGNAL", "SIG_DFL"),
        ("SECRETS_AGENT_EXEC_SIGNAL", "SIGNOTHING"),
    ],
)
def test_exec_signal_must_be_a_real_signal(name: str, named: str) -> None:
    """SIG_IGN, SIG_DFL and unknown SIG* names are refused at load, naming exec.signal."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**ENV, name: named})
    assert [key for key, _ in caught.value.problems] == ["exec.signal"]


@pytest.mark.parametrize("name", ["SECRETS_AGENT_CLIENTS", "SECRETS_AGENT_SECRET_POLICIES", "SECRETS_AGENT_TEMPLATES"])
def test_arrays_of_tables_say_they_belong_in_the_file(name: str) -> None:
    """[[clients]], [[secret_policies]] and [[templates]] from the environment are refused with the reason."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**ENV, name: "[]"})
    assert caught.value.problems[0][0] == name and "config file" in caught.value.problems[0][1]


def test_a_toml_string_is_one_item_and_environment_text_is_split(tmp_path: Any) -> None:
    """In the file a string is one list item (a pattern may hold a comma); from the environment text is split."""
    token = write_token(tmp_path / "t", "x" * 20)
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[prefetch]\nsecrets = "a,b"\n[exec]\ncommand = "/opt/my app/run"\nenv = "A=b"\n'
        f'[[clients]]\nname = "c"\ntoken = "file://{token}"\nallow = "team/{{a,b}}"\n'
    )
    from_file = load_settings(str(path), environ=ENV)
    assert from_file.prefetch.secrets == ("a,b",)
    assert from_file.exec.command == ("/opt/my app/run",)
    assert from_file.clients[0].allow == ("team/{a,b}",)
    from_env = load_settings(environ={**ENV, "SECRETS_AGENT_PREFETCH_SECRETS": "a,b"})
    assert from_env.prefetch.secrets == ("a", "b")
