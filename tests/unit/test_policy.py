"""Policy evaluation as IAM does it, decided on the names a read can be known by."""

from __future__ import annotations

import pytest

from agent.access import policy as policy_module
from agent.access.policy import Policy, canonical_ids, subject_ids
from agent.config import ClientSettings, SecretPolicySettings

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
CLIENTS = (
    ClientSettings(name="billing", allow=("prod/*",), deny=("prod/admin-*",)),
    ClientSettings(name="web", allow=("web/*",)),
)
POLICIES = (
    SecretPolicySettings(secret="prod/shared", readers=("web",)),
    SecretPolicySettings(secret="prod/db", deny=("billing",)),
)


def test_explicit_deny_wins_over_allow() -> None:
    """An identity deny and a resource deny both beat the client's own allow."""
    policy = Policy(CLIENTS, POLICIES)
    assert policy.allows("billing", subject_ids("prod/api"))
    assert not policy.allows("billing", subject_ids("prod/admin-keys"))
    assert not policy.allows("billing", subject_ids("prod/db"))


def test_resource_policy_grants_without_identity_allow() -> None:
    """readers in a secret policy grant a client its own allow list does not."""
    policy = Policy(CLIENTS, POLICIES)
    assert policy.allows("web", subject_ids("prod/shared"))
    assert not policy.allows("web", subject_ids("prod/api"))


def test_name_patterns_cover_reads_by_arn() -> None:
    """A pattern on names matches a read by full ARN or partial ARN too."""
    policy = Policy(CLIENTS, ())
    assert policy.allows("billing", subject_ids(ARN))
    assert policy.allows("billing", subject_ids(ARN[:-7]))
    assert not policy.allows("web", subject_ids(ARN))


def test_canonical_ids_ignore_what_the_caller_typed() -> None:
    """The final decision uses the secret's own name and ARN, so a guessed suffix cannot widen an allow."""
    backup_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-backup-XyZ123"
    assert "prod/db" not in canonical_ids(arn=backup_arn, name="prod/db-backup")
    assert not Policy((ClientSettings(name="c", allow=("prod/db",)),), ()).allows(
        "c", canonical_ids(arn=backup_arn, name="prod/db-backup")
    )


def test_default_client_unrestricted_unless_resource_denied() -> None:
    """The shared-token client reads everything unless a secret policy denies it by name."""
    assert Policy((), ()).unrestricted("default")
    denying = Policy((), (SecretPolicySettings(secret="prod/db", deny=("default",)),))
    assert not denying.unrestricted("default")
    assert not denying.allows("default", subject_ids("prod/db"))
    assert denying.allows("default", subject_ids("prod/other"))


def test_role_patterns_do_not_cross_path_segments() -> None:
    """A roles glob matches within one path segment: role/app-* allows role/app-web, not role/app-x/admin."""
    policy = Policy((ClientSettings(name="c", roles=("arn:aws:iam::123456789012:role/app-*",)),), ())
    assert policy.allows_role("c", "arn:aws:iam::123456789012:role/app-web")
    assert not policy.allows_role("c", "arn:aws:iam::123456789012:role/app-x/admin")
    assert policy.allows_role("default", "arn:aws:iam::123456789012:role/anything")


def test_remembered_decisions_are_evaluations_and_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked again, a decision is the same as a fresh policy's; past the bound the memo starts over."""
    monkeypatch.setattr(policy_module, "MAX_DECISIONS", 3)
    policy = Policy(CLIENTS, POLICIES)
    asks = [("billing", "prod/api"), ("billing", "prod/db"), ("web", "prod/shared"), ("web", "prod/api")]
    first = [policy.allows(client, subject_ids(secret)) for client, secret in asks]
    again = [policy.allows(client, subject_ids(secret)) for client, secret in asks]
    fresh = [Policy(CLIENTS, POLICIES).allows(client, subject_ids(secret)) for client, secret in asks]
    assert first == again == fresh == [True, False, True, False]
    assert len(policy._decisions) <= 3


def test_decisions_on_long_ids_are_not_remembered() -> None:
    """Ids longer than the memo keeps are decided every time, and decided the same."""
    policy = Policy(CLIENTS, POLICIES)
    long_id = "prod/" + "x" * 3000
    assert policy.allows("billing", subject_ids(long_id))
    assert not policy.allows("web", subject_ids(long_id))
    assert not policy._decisions
