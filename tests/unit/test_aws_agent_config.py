"""AWS's agent's configuration file read as is: both layouts mapped, differences warned once, the rest refused."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from agent.config import Settings, load_settings
from agent.core.errors import ConfigError
from tests.support.configs import write_token

ENV = {"AWS_TOKEN": "t0ken"}

FLAT = """
log_level = "DEBUG"
http_address = "127.0.0.2"
http_port = "2999"
ttl_seconds = "60"
cache_size = "100"
max_conn = "50"
ssrf_headers = ["X-My-Token"]
ssrf_env_variables = ["MY_TOKEN", "AWS_TOKEN"]
path_prefix = "/secrets/"
region = "us-west-2"
ignore_transient_errors = false
validate_credentials = false
"""

NESTED = """
[logging]
log_level = "warn"
log_to_file = false

[capabilities.secrets_manager]
enabled = true
http_port = 2999
path_prefix = "/secrets"
max_conn = 50
region = "us-west-2"
ignore_transient_errors = false
validate_credentials = false

[capabilities.secrets_manager.cache]
ttl_seconds = 60
cache_size = 100

[capabilities.secrets_manager.security]
ssrf_headers = ["X-My-Token"]
ssrf_env_variables = ["MY_TOKEN", "AWS_TOKEN"]

[capabilities.secrets_manager.prefetch]
secrets = [{ secret_id = "app/db" }, { secret_id = "app/api" }]

[[capabilities.secrets_manager.prefetch.filter_tags]]
key = "team"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "aws-agent.toml"
    path.write_text(text)
    return load_settings(str(path), environ=ENV if env is None else env)


def refusal(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    return str(caught.value)


def test_flat_layout_maps_every_key(tmp_path: Path) -> None:
    """AWS 1.x's flat file (numbers as strings) sets the matching native settings."""
    settings = load(tmp_path, FLAT, {"MY_TOKEN": "mine", "AWS_TOKEN": "aws"})
    assert settings.log.level == "debug"
    assert (settings.server.http_host, settings.server.http_port) == ("127.0.0.2", 2999)
    assert settings.server.max_connections == 50
    assert settings.server.path_prefix == "/secrets/"
    assert (settings.cache.ttl_seconds, settings.cache.max_entries, settings.cache.max_stale_seconds) == (60, 100, 0)
    assert settings.auth.headers == ("X-My-Token",)
    assert settings.auth.token is not None and settings.auth.token.value == "mine"
    assert (settings.aws.region, settings.aws.validate_credentials) == ("us-west-2", False)


def test_nested_layout_maps_every_key(tmp_path: Path) -> None:
    """The nested [capabilities.secrets_manager] layout, prefetch included, maps like the flat one."""
    settings = load(tmp_path, NESTED, {"AWS_TOKEN": "aws"})
    assert settings.log.level == "warning"
    assert settings.server.http_port == 2999
    assert settings.server.max_connections == 50
    assert settings.server.path_prefix == "/secrets/"
    assert (settings.cache.ttl_seconds, settings.cache.max_entries, settings.cache.max_stale_seconds) == (60, 100, 0)
    assert settings.auth.headers == ("X-My-Token",)
    assert settings.auth.token is not None and settings.auth.token.location == "AWS_TOKEN"  # MY_TOKEN unset
    assert (settings.aws.region, settings.aws.validate_credentials) == ("us-west-2", False)
    assert settings.prefetch.secrets == ("app/db", "app/api")
    assert settings.prefetch.tags == (("team", None),)


def test_one_warning_per_key_whose_meaning_differs(tmp_path: Path) -> None:
    """Each key that maps loosely draws exactly one warning naming it; keys that map exactly draw none."""
    text = NESTED.replace("log_to_file = false", "log_to_file = true").replace(
        "[capabilities.secrets_manager.prefetch]\n", "[capabilities.secrets_manager.prefetch]\nmax_jitter_seconds = 3\n"
    )
    settings = load(tmp_path, text, {"AWS_TOKEN": "aws"})
    warned = [w for w in settings.warnings if w.startswith("AWS agent key ")]
    differing = ("cache.cache_size", "ignore_transient_errors", "ssrf_env_variables", "log_to_file", "max_jitter")
    for key in differing:
        assert sum(key in w for w in warned) == 1, (key, warned)
    assert len(warned) == 5, warned
    quiet = load(tmp_path, 'http_port = "2999"\nttl_seconds = "60"\nregion = "us-west-2"\n')
    assert quiet.warnings == ()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_TOKEN": "a", "AWS_SESSION_TOKEN": "s", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"}, "AWS_TOKEN"),
        ({"AWS_SESSION_TOKEN": "s", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"}, "AWS_SESSION_TOKEN"),
        ({"AWS_TOKEN": "", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"}, "AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    ],
)
def test_token_from_first_set_of_aws_variables(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    """Without ssrf_env_variables the token is the first set of AWS_TOKEN, AWS_SESSION_TOKEN, AWS_CONTAINER_…."""
    settings = load(tmp_path, 'http_port = "2773"\n', env)
    assert settings.auth.token is not None
    assert (settings.auth.token.location, settings.auth.token.value) == (expected, env[expected])


def test_token_none_of_aws_variables_set_names_all(tmp_path: Path) -> None:
    """With none of AWS's three variables set the refusal names all three."""
    message = refusal(tmp_path, 'http_port = "2773"\n', {})
    assert "AWS_TOKEN, AWS_SESSION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN" in message


def test_ssrf_env_variables_order_wins(tmp_path: Path) -> None:
    """ssrf_env_variables replaces AWS's list, in its own order."""
    settings = load(tmp_path, 'ssrf_env_variables = ["SECOND", "FIRST"]\n', {"FIRST": "1", "SECOND": "2"})
    assert settings.auth.token is not None and settings.auth.token.location == "SECOND"


def test_token_variable_naming_a_file(tmp_path: Path) -> None:
    """A variable holding file:///path names the token file (AWS's agent's convention)."""
    token = write_token(tmp_path / "token", "from-file")
    settings = load(tmp_path, 'http_port = "2773"\n', {"AWS_SESSION_TOKEN": f"file://{token}"})
    assert settings.auth.token is not None
    assert (settings.auth.token.kind, settings.auth.token.location) == ("file", str(token))


def test_native_token_env_list(tmp_path: Path) -> None:
    """A native auth.token = "env:A,B" takes the first variable set; an empty name is refused."""
    path = tmp_path / "agent.toml"
    path.write_text('[auth]\ntoken = "env:A,B"\n')
    settings = load_settings(str(path), environ={"B": "b"})
    assert settings.auth.token is not None and settings.auth.token.location == "B"
    path.write_text('[auth]\ntoken = "env:A,"\n')
    with pytest.raises(ConfigError, match=r"auth\.token"):
        load_settings(str(path), environ={"A": "a"})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('http_port = "2773"\nlog_colour = "red"\n', "log_colour"),
        ("[capabilities.secrets_manager.cache]\nttl = 5\n", "capabilities.secrets_manager.cache.ttl"),
        ('http_port = 2773\n[capabilities.secrets_manager]\nregion = "x"\n', "http_port"),
        ("[capabilities.acm]\nenabled = true\n", "capabilities.acm"),
        ('cache_size = "0"\n', "cache_size"),
        ("[capabilities.secrets_manager.cache]\nttl_seconds = 4000\n", "secrets_manager.cache.ttl_seconds"),
        ('http_port = "80"\n', "http_port"),
        ("[capabilities.secrets_manager]\nenabled = false\n", "capabilities.secrets_manager.enabled"),
        ('credentials_file_path = "/x"\n', "credentials_file_path"),
        (
            '[[capabilities.secrets_manager.prefetch.secrets]]\nsecret_id = "a"\nrole_arn = "arn:aws:iam::1:role/r"\n',
            "capabilities.secrets_manager.prefetch.secrets[0].role_arn",
        ),
        ('log_level = "verbose"\n', "log_level"),
        ("ssrf_headers = []\n", "ssrf_headers"),
        ('path_prefix = "v1"\n', "server.path_prefix"),
    ],
)
def test_aws_keys_refused_by_name(tmp_path: Path, text: str, named: str) -> None:
    """An unknown, unsupported or out-of-range AWS-agent key is refused, named as written."""
    message = refusal(tmp_path, text)
    assert named in message
    assert "unknown section" not in message  # refused as AWS's key, not as a stray native section


def test_mixed_layouts_refused_naming_both(tmp_path: Path) -> None:
    """A file with AWS-agent keys and this agent's sections is refused, naming the keys of each."""
    message = refusal(tmp_path, 'http_port = "2773"\nttl_seconds = "5"\n[server]\nhttp_port = 2773\n')
    assert "http_port, ttl_seconds" in message and "(server)" in message


@pytest.mark.parametrize(("raw", "prefix"), [("/v1/", "/v1/"), ("/secrets", "/secrets/"), ("/a/b/", "/a/b/")])
def test_path_prefix_accepted(tmp_path: Path, raw: str, prefix: str) -> None:
    """server.path_prefix takes a path and gives it a trailing slash."""
    path = tmp_path / "agent.toml"
    path.write_text(f'[server]\npath_prefix = "{raw}"\n')
    assert load_settings(str(path), environ=ENV).server.path_prefix == prefix


@pytest.mark.parametrize("raw", ["/", "v1/", "/value/", "/healthz", "/ui/", "/status/", "/a//b/", "/{x}/"])
def test_path_prefix_refused(tmp_path: Path, raw: str) -> None:
    """server.path_prefix refuses '/', a relative path, a fixed route's root and route syntax."""
    path = tmp_path / "agent.toml"
    path.write_text(f'[server]\npath_prefix = "{raw}"\n')
    with pytest.raises(ConfigError, match=r"server\.path_prefix") as caught:
        load_settings(str(path), environ=ENV)
    assert "unknown key" not in str(caught.value)


@pytest.mark.parametrize("text", [FLAT, NESTED])
def test_native_equivalent_loads_to_same_settings(tmp_path: Path, text: str) -> None:
    """The native TOML printed for an AWS-agent file parses and loads to the same settings."""
    from agent.config.loader import native_equivalent  # here: the rest of this file runs on older code too

    env = {"MY_TOKEN": "mine", "AWS_TOKEN": "aws"}
    original = load(tmp_path, text, env)
    native = native_equivalent(str(tmp_path / "aws-agent.toml"))
    assert native is not None
    tomllib.loads(native)
    path = tmp_path / "native.toml"
    path.write_text(native)
    again = load_settings(str(path), environ=env)
    assert again.warnings == ()
    assert dataclasses.replace(again, source=None) == dataclasses.replace(original, source=None, warnings=())


def test_native_equivalent_none_for_native_file(tmp_path: Path) -> None:
    """A native file has no AWS-agent equivalent to print."""
    from agent.config.loader import native_equivalent

    path = tmp_path / "agent.toml"
    path.write_text("[server]\nhttp_port = 2773\n")
    assert native_equivalent(str(path)) is None


def test_max_roles_maps_to_the_same_bound(tmp_path: Path) -> None:
    """AWS's max_roles is this agent's aws.max_roles (distinct roleArn values), with no warning."""
    text = NESTED.replace("[capabilities.secrets_manager]\n", "[capabilities.secrets_manager]\nmax_roles = 5\n", 1)
    settings = load(tmp_path, text, {"AWS_TOKEN": "aws"})
    assert settings.aws.max_roles == 5
    assert not [w for w in settings.warnings if "max_roles" in w]


def test_path_prefix_cannot_take_over_parameter_store(tmp_path: Path) -> None:
    """server.path_prefix = /systemsmanager/ is refused: it would hide the Parameter Store route."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**ENV, "SECRETS_AGENT_SERVER_PATH_PREFIX": "/systemsmanager/"})
    assert "server.path_prefix" in str(caught.value)
