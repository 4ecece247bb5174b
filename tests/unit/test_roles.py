"""roleArn reads and cross-region ARNs, as pure logic: ARN parsing, the allow-list, the role registry, region caches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.access.policy import Policy
from agent.cache.store import SecretCache
from agent.config import load_settings
from agent.config.access import ClientSettings
from agent.core.errors import BadRequest, ConfigError, Forbidden, UpstreamDenied, UpstreamUnavailable
from agent.server.regions import RegionalCaches
from agent.server.roles import RoleRegistry
from agent.upstream.regions import arn_region
from agent.upstream.roles import valid_role_arn
from agent.upstream.source import SecretSource
from tests.support.fakes import FakeSource

ROLE = "arn:aws:iam::123456789012:role/billing-reader"
OTHER = "arn:aws:iam::123456789012:role/web-reader"
POLICY = Policy((ClientSettings(name="billing", token=None, uid=1, roles=("arn:aws:iam::*:role/billing-*",)),), ())


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (ROLE, True),
        ("arn:aws:iam::123456789012:role/service-role/path/app_reader+=,.@-", True),
        ("arn:aws-cn:iam::123456789012:role/x", True),
        ("billing-reader", False),
        ("arn:aws:iam::12345:role/x", False),
        ("arn:aws:iam::123456789012:user/x", False),
        ("arn:aws:iam::123456789012:role/", False),
        ("arn:aws:iam::123456789012:role/x y", False),
        ("arn:aws:iam::123456789012:role/caf\u00e9", False),
        ("arn:aws:iam::123456789012:role/" + "x" * 65, False),
        ("", False),
    ],
)
def test_role_arn_validation(text: str, valid: bool) -> None:
    """Only well-formed IAM role ARNs are accepted as roleArn."""
    assert valid_role_arn(text) is valid


@pytest.mark.parametrize(
    ("secret_id", "region"),
    [
        ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-AbCdEf", "eu-west-1"),
        ("arn:aws:secretsmanager:us-gov-west-1:123456789012:secret:app/db", "us-gov-west-1"),
        ("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:app/db", "cn-north-1"),
        ("app/db", None),
        ("arn:aws:secretsmanager:../evil:123456789012:secret:app/db", None),
        ("arn:aws:ssm:eu-west-1:123456789012:parameter/x", None),
    ],
)
def test_arn_region(secret_id: str, region: str | None) -> None:
    """The region of a Secrets Manager ARN; names and malformed ARNs have none (they stay at home)."""
    assert arn_region(secret_id) == region


def test_roles_allow_list() -> None:
    """The default client may name any role; others only roles their list matches; no list, no role."""
    assert POLICY.allows_role("default", OTHER)
    assert POLICY.allows_role("billing", ROLE)
    assert not POLICY.allows_role("billing", OTHER)
    assert not POLICY.allows_role("web", ROLE)


def test_roles_config(tmp_path: Path) -> None:
    """[[clients]] roles must be role ARNs (or globs on them); aws.max_roles defaults to 20 and is bounded."""
    path = tmp_path / "agent.toml"
    path.write_text('[[clients]]\nname = "a"\ntoken = "env:T"\nroles = ["billing-reader"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={"T": "t0k3n"})
    assert "clients[0] (a).roles" in [k for k, _ in caught.value.problems]
    path.write_text(f'[aws]\nmax_roles = 3\n[[clients]]\nname = "a"\ntoken = "env:T"\nroles = ["{ROLE}"]\n')
    settings = load_settings(str(path), environ={"T": "t0k3n"})
    assert settings.clients[0].roles == (ROLE,) and settings.aws.max_roles == 3
    assert load_settings(None, environ={"AWS_TOKEN": "t"}).aws.max_roles == 20
    with pytest.raises(ConfigError):
        load_settings(None, environ={"AWS_TOKEN": "t", "SECRETS_AGENT_AWS_MAX_ROLES": "-1"})


def cache_over(source: SecretSource) -> RegionalCaches:
    return RegionalCaches(SecretCache(source, ttl_seconds=60, max_entries=10, max_stale_seconds=60))


class Opener:
    """A fake ``open_role``: counts calls; fails for roles in ``refuse``; can be held open."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refuse: set[str] = set()
        self.gate: asyncio.Event | None = None

    async def __call__(self, role_arn: str) -> SecretSource:
        self.calls.append(role_arn)
        if self.gate is not None:
            await self.gate.wait()
        if role_arn in self.refuse:
            raise UpstreamDenied("not authorized to perform sts:AssumeRole", code="AccessDenied")
        return FakeSource()


async def test_registry_check_order() -> None:
    """Malformed → 400, not allowed → 403 with no AssumeRole, full → 400, AssumeRole refused → 403 holding no slot."""
    opener = Opener()
    registry = RoleRegistry(max_roles=1, policy=POLICY, make_cache=cache_over, open_role=opener)
    with pytest.raises(BadRequest):
        await registry.caches_for("default", "not-an-arn")
    with pytest.raises(Forbidden):
        await registry.caches_for("billing", OTHER)
    assert opener.calls == []
    opener.refuse.add(ROLE)
    with pytest.raises(Forbidden):
        await registry.caches_for("billing", ROLE)
    assert len(registry) == 0  # a refused role holds no slot
    opener.refuse.clear()
    held = await registry.caches_for("billing", ROLE)
    assert await registry.caches_for("default", ROLE) is held and opener.calls == [ROLE, ROLE]
    with pytest.raises(BadRequest, match="at most 1"):
        await registry.caches_for("default", OTHER)
    assert opener.calls == [ROLE, ROLE]
    await registry.stop()


async def test_registry_single_flight_and_transient_errors() -> None:
    """Concurrent first reads of a role assume it once; a transient STS failure keeps its own status, not 403."""
    opener = Opener()
    opener.gate = asyncio.Event()
    registry = RoleRegistry(max_roles=5, policy=POLICY, make_cache=cache_over, open_role=opener)
    waiting = [asyncio.create_task(registry.caches_for("default", ROLE)) for _ in range(5)]
    await asyncio.sleep(0)
    opener.gate.set()
    caches = await asyncio.gather(*waiting)
    assert len({id(c) for c in caches}) == 1 and opener.calls == [ROLE]

    async def unreachable(_role: str) -> SecretSource:
        raise UpstreamUnavailable("cannot reach STS")

    failing = RoleRegistry(max_roles=5, policy=POLICY, make_cache=cache_over, open_role=unreachable)
    with pytest.raises(UpstreamUnavailable):
        await failing.caches_for("default", ROLE)
    await registry.stop()


async def test_registry_without_role_support_refuses() -> None:
    """Built without a way to assume roles (a fake source), a valid, allowed roleArn is 400."""
    registry = RoleRegistry(max_roles=5, policy=POLICY, make_cache=cache_over)
    with pytest.raises(BadRequest):
        await registry.caches_for("default", ROLE)


def test_other_regions_have_their_own_caches() -> None:
    """Names and home ARNs use the home cache; each other region's ARNs its own cache, bounded."""
    source = FakeSource()
    home = SecretCache(source, ttl_seconds=60, max_entries=10, max_stale_seconds=60)
    made: list[SecretCache] = []

    def make() -> SecretCache:
        made.append(SecretCache(source, ttl_seconds=60, max_entries=10, max_stale_seconds=60))
        return made[-1]

    caches = RegionalCaches(home, make, home_region="us-east-1", max_regions=1)
    assert caches.for_id("app/db") is home
    assert caches.for_id("arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db") is home
    eu = caches.for_id("arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-AbCdEf")
    assert eu is not home and caches.for_id("arn:aws:secretsmanager:eu-west-1:123456789012:secret:x") is eu
    with pytest.raises(BadRequest):
        caches.for_id("arn:aws:secretsmanager:ap-south-1:123456789012:secret:app/db")
    assert caches.regions == ["eu-west-1"] and len(made) == 1


def test_invented_regions_are_not_regions() -> None:
    """An ARN naming a region botocore does not know is not cross-region: no client or cache is made for it."""
    from agent.upstream.regions import arn_region

    assert arn_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-AbCdEf") == "eu-west-1"
    assert arn_region("arn:aws:secretsmanager:zz-fake-1:123456789012:secret:app/db-AbCdEf") is None
