"""Configuration: defaults, precedence, validation that names every bad key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.core.errors import ConfigError
from tests.support.configs import INVALID, expected_keys
from tests.support.paths import CONFIG

ENV = {"AWS_TOKEN": "t0ken"}


def test_defaults() -> None:
    """With no file, env or flags the documented defaults apply."""
    settings = load_settings(environ=ENV)
    assert (settings.server.http_host, settings.server.http_port) == ("127.0.0.1", 2773)
    assert settings.server.unix_socket is None
    assert settings.server.unix_socket_mode == 0o660
    assert settings.server.max_connections == 800
    assert settings.server.allow_non_loopback is False
    assert settings.auth.token.spec == "env:AWS_TOKEN"
    assert settings.auth.headers == ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
    assert settings.aws.validate_credentials is True
    assert (settings.cache.ttl_seconds, settings.cache.max_entries) == (300, 1000)
    assert settings.log.format == "json"


def test_example_config_is_valid_and_complete() -> None:
    """config/agent.toml parses and mentions every key the schema knows."""
    from agent.config import SCHEMA

    path = CONFIG / "agent.toml"
    load_settings(str(path), environ=ENV)
    text = path.read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, key


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    """CLI beats env beats file beats defaults, key by key."""
    path = tmp_path / "agent.toml"
    path.write_text("[server]\nhttp_port = 1111\nmax_connections = 5\n[cache]\nttl_seconds = 7\n")
    env = {**ENV, "SECRETS_AGENT_SERVER_HTTP_PORT": "2222", "SECRETS_AGENT_CACHE_TTL_SECONDS": "8"}
    settings = load_settings(str(path), environ=env, overrides={"server.http_port": "3333"})
    assert settings.server.http_port == 3333  # CLI
    assert settings.cache.ttl_seconds == 8  # env over file
    assert settings.server.max_connections == 5  # file over default
    assert settings.cache.max_entries == 1000  # default


def test_env_lists_and_modes() -> None:
    """Env values are coerced: comma lists, JSON lists, octal modes, booleans, tags."""
    env = {
        **ENV,
        "SECRETS_AGENT_PREFETCH_SECRETS": "a, b/c ,arn:aws:secretsmanager:us-east-1:1:secret:x",
        "SECRETS_AGENT_PREFETCH_NAME_PREFIXES": '["prod/", "shared/"]',
        "SECRETS_AGENT_PREFETCH_TAGS": "team=payments,critical",
        "SECRETS_AGENT_SERVER_UNIX_SOCKET_MODE": "0600",
        "SECRETS_AGENT_METRICS_PUBLIC": "yes",
    }
    settings = load_settings(environ=env)
    assert settings.prefetch.secrets == ("a", "b/c", "arn:aws:secretsmanager:us-east-1:1:secret:x")
    assert settings.prefetch.name_prefixes == ("prod/", "shared/")
    assert settings.prefetch.tags == (("team", "payments"), ("critical", None))
    assert settings.server.unix_socket_mode == 0o600
    assert settings.metrics.public is True


def test_tags_as_table(tmp_path: Path) -> None:
    """Tags may be written as a TOML table too."""
    path = tmp_path / "agent.toml"
    path.write_text('[prefetch]\ntags = { team = "payments" }\n')
    assert load_settings(str(path), environ=ENV).prefetch.tags == (("team", "payments"),)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_names_key(path: Path) -> None:
    """Each invalid fixture is refused with a message naming its offending key(s)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ=ENV)
    named = [key for key, _ in caught.value.problems]
    for key in expected_keys(path):
        assert key in named, (key, caught.value.problems)


def test_unknown_env_setting_refused() -> None:
    """A misspelt SECRETS_AGENT_* variable is an error, not silently ignored."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**ENV, "SECRETS_AGENT_CACHE_TTL": "5"})
    assert "SECRETS_AGENT_CACHE_TTL" in str(caught.value)


def test_non_loopback_message_and_opt_in() -> None:
    """A non-loopback host is refused with a message saying loopback, unless allowed."""
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(environ=ENV, overrides={"server.http_host": "10.0.0.5"})
    allowed = load_settings(environ=ENV, overrides={"server.http_host": "0.0.0.0", "server.allow_non_loopback": True})
    assert allowed.server.http_host == "0.0.0.0"
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert load_settings(environ=ENV, overrides={"server.http_host": host}).server.http_host == host


@pytest.mark.parametrize(
    "environ",
    [{}, {"AWS_TOKEN": ""}, {"AWS_TOKEN": "   "}],
    ids=["unset", "empty", "blank"],
)
def test_env_token_missing_says_how(environ: dict[str, str]) -> None:
    """An unset or empty token variable is refused with instructions."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    message = str(caught.value)
    assert "auth.token" in message and "AWS_TOKEN" in message and "file:///" in message


def test_token_file_empty_refused(tmp_path: Path) -> None:
    """An empty token file is refused."""
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_settings(environ={}, overrides={"auth.token": f"file://{path}"})


def test_token_file_unreadable_refused(tmp_path: Path) -> None:
    """A token file that cannot be read is refused, naming auth.token."""
    if os.geteuid() == 0:
        target = tmp_path / "missing"
    else:  # pragma: no cover - CI runs as root, where chmod 000 does not stop reads
        target = tmp_path / "token"
        target.write_text("x")
        target.chmod(0)
    with pytest.raises(ConfigError, match=r"auth\.token"):
        load_settings(environ={}, overrides={"auth.token": f"file://{target}"})


def test_token_file_open_mode_warns(tmp_path: Path) -> None:
    """A world-readable token file loads, with a warning that says chmod 0640."""
    path = tmp_path / "token"
    path.write_text("abc")
    path.chmod(0o644)
    settings = load_settings(environ={}, overrides={"auth.token": f"file://{path}"})
    assert any("0640" in warning for warning in settings.warnings)
    path.chmod(0o640)
    assert load_settings(environ={}, overrides={"auth.token": f"file://{path}"}).warnings == ()


def test_bad_token_form_does_not_echo_value() -> None:
    """A token pasted in place of a source is refused without echoing it."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"auth.token": "hunter2-literal"})
    assert "hunter2-literal" not in str(caught.value)


def test_aws_only_commands_need_no_token() -> None:
    """sweep-queues (aws_only) loads without any token source; the agent itself still needs one."""
    settings = load_settings(environ={}, overrides={"events.sns_topic_arn": "arn:aws:sns:us-east-1:1:t"}, aws_only=True)
    assert settings.auth.token is None and settings.events.queue_prefix == "secrets-agent-"
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={})
    assert "auth.token" in [key for key, _ in caught.value.problems]
