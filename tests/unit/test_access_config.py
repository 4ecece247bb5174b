"""Access-control configuration: [[clients]] and [[secret_policies]] refused with the key named, or accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_settings
from agent.core.errors import ConfigError


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[[clients]]\nname = "default"\ntoken = "env:T"\n', "clients[0] (default).name"),
        ('[[clients]]\nname = "a"\ntoken = "env:T"\n[[clients]]\nname = "a"\ntoken = "env:T"\n', "clients[1] (a).name"),
        ('[[clients]]\nname = "a"\n', "clients[0] (a)"),
        ('[[clients]]\nname = "a"\ntoken = "env:T"\ncolour = "red"\n', "clients[0].colour"),
        ('[[clients]]\nname = "a"\nuid = "root"\n', "clients[0] (a).uid"),
        ('[[clients]]\nname = "a"\ntoken = "env:T"\nrate_per_second = 0\n', "clients[0] (a).rate_per_second"),
        ('[[clients]]\nname = "a"\ntoken = "env:MISSING"\n', "clients[0] (a).token"),
        ('[[secret_policies]]\nreaders = ["a"]\n', "secret_policies[0].secret"),
        ('[[secret_policies]]\nsecret = "x"\nwriters = ["a"]\n', "secret_policies[0].writers"),
    ],
    ids=[
        "named-default",
        "duplicate",
        "no-identity",
        "unknown-key",
        "bad-uid",
        "zero-rate",
        "bad-token",
        "no-secret",
        "policy-unknown-key",
    ],
)
def test_client_config_errors_name_the_key(tmp_path: Path, snippet: str, key: str) -> None:
    """Bad [[clients]]/[[secret_policies]] entries are refused, naming the entry and key."""
    path = tmp_path / "agent.toml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={"T": "t0k3n"})
    assert key in [k for k, _ in caught.value.problems], caught.value.problems


def test_shared_token_optional_with_clients(tmp_path: Path) -> None:
    """With [[clients]], an unset auth.token is fine and no default client exists."""
    path = tmp_path / "agent.toml"
    path.write_text('[[clients]]\nname = "a"\ntoken = "env:T"\n')
    settings = load_settings(str(path), environ={"T": "t0k3n"})
    assert settings.auth.token is None and [c.name for c in settings.clients] == ["a"]
