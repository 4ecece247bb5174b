"""Local access policies, evaluated as IAM does.

Two kinds, as in Secrets Manager itself:

- identity-based: a client's ``allow`` / ``deny`` lists of secret patterns;
- resource-based: ``[[secret_policies]]`` whose ``secret`` pattern names
  ``readers`` (granted) and ``deny`` (refused) clients.

Evaluation: an explicit deny anywhere wins; otherwise an allow from either kind
grants; otherwise the read is denied. The ``default`` client (the shared
``auth.token``) is allowed everything, so simple setups need no policy; a
resource policy can still deny it.

Patterns are shell globs (``fnmatch``, where ``*`` also crosses ``/``) matched
against every name the request can be known by: the id as asked, the secret's
name and ARNs when the cache knows them, and the name inside an ARN (with and
without the 6-character suffix), so ``prod/*`` covers a read by ARN too. That
first decision needs no upstream call and denies early; after the value is
fetched the read is decided again on the secret's canonical identity only
(:func:`canonical_ids`), so a guessed suffix can never widen an allow.

A client's ``roles`` (globs on IAM role ARNs) are the roles it may read as
with ``roleArn`` (:meth:`Policy.allows_role`); the ``default`` client may name any.

Policies are fixed for the life of the process (SIGHUP reloads tokens, not
policies), so a decision depends on nothing but the client and the ids: each
is kept once made (a bounded memo of short ids, emptied when full), and a
cached read pays for a dict lookup instead of glob matching (issue 13).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from functools import lru_cache

from agent.config.access import DEFAULT_CLIENT, ClientSettings, SecretPolicySettings
from agent.core.types import looks_like_arn, partial_arn

# Decisions kept per Policy. The ids come from requests, so the memo is bounded (emptied when full)
# and only short ids are kept (a secret's name is at most 512 characters): at most a few MiB.
MAX_DECISIONS = 2048
MAX_REMEMBERED_IDS_LENGTH = 2048
# subject_ids remembers the ids of a secret id at most this long (a full ARN of a 512-character name fits).
MAX_REMEMBERED_ID_LENGTH = 600


def subject_ids(secret_id: str, *, arn: str | None = None, name: str | None = None) -> tuple[str, ...]:
    """Every identifier a policy pattern may match for this read."""
    if len(secret_id) <= MAX_REMEMBERED_ID_LENGTH:  # asked on every read: remembered for the usual ids
        return _remembered_subject_ids(secret_id, arn, name)
    return _subject_ids(secret_id, arn, name)


def _subject_ids(secret_id: str, arn: str | None, name: str | None) -> tuple[str, ...]:
    ids = [secret_id]
    for known in (arn, name):
        if known:
            ids.append(known)
    if arn:
        ids.append(partial_arn(arn))
    for candidate in (secret_id, arn):
        if candidate and looks_like_arn(candidate):
            resource = candidate.split(":secret:", 1)[1]
            ids.extend((resource, partial_arn(resource)))
    return tuple(dict.fromkeys(ids))


# Bounded: ids are caller input (short ones only, above), arn and name the cache's.
_remembered_subject_ids = lru_cache(maxsize=1024)(_subject_ids)


@lru_cache(maxsize=1024)  # asked on every read; arn and name are the cache's, not caller input
def canonical_ids(*, arn: str, name: str) -> tuple[str, ...]:
    """The identifiers of a secret as Secrets Manager itself names it (after a fetch).

    Never derived from what the caller typed: a partial ARN such as
    ``...:secret:prod/db-backup`` must not be mistaken for ``prod/db``.
    """
    return tuple(dict.fromkeys((name, arn, partial_arn(arn))))


def _role_matches(pattern: str, role_arn: str) -> bool:
    """A role ARN glob, segment by segment: ``*`` never crosses ``/``, so ``role/app-*`` is not ``role/app-x/admin``."""
    parts, wanted = pattern.split("/"), role_arn.split("/")
    return len(parts) == len(wanted) and all(fnmatchcase(want, part) for want, part in zip(wanted, parts, strict=True))


def _matches(patterns: Iterable[str], ids: Sequence[str]) -> bool:
    return any(fnmatchcase(identifier, pattern) for pattern in patterns for identifier in ids)


class Policy:
    """Decides whether a client may read a secret."""

    def __init__(self, clients: Sequence[ClientSettings], policies: Sequence[SecretPolicySettings]) -> None:
        self._clients = {client.name: client for client in clients}
        self._policies = tuple(policies)
        # The default client with no resource policy denying it may read everything:
        # the common single-token setup skips pattern matching on the hot path.
        denied = {name for policy in self._policies for name in policy.deny}
        self._unrestricted = frozenset() if DEFAULT_CLIENT in denied else frozenset({DEFAULT_CLIENT})
        self._decisions: dict[tuple[str, tuple[str, ...]], bool] = {}

    def unrestricted(self, client: str) -> bool:
        """True when no policy can refuse ``client`` anything."""
        return client in self._unrestricted

    def allows_role(self, client: str, role_arn: str) -> bool:
        """True when ``client`` may name ``role_arn`` as roleArn: the default client always, others by ``roles``."""
        if client == DEFAULT_CLIENT:
            return True
        settings = self._clients.get(client)
        return settings is not None and any(_role_matches(pattern, role_arn) for pattern in settings.roles)

    def allows(self, client: str, ids: Sequence[str]) -> bool:
        """True when ``client`` may read the secret known by ``ids``."""
        key = (client, tuple(ids))
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(client, key[1])
            if sum(map(len, key[1])) <= MAX_REMEMBERED_IDS_LENGTH:
                if len(self._decisions) >= MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[key] = decision
        return decision

    def _decide(self, client: str, ids: Sequence[str]) -> bool:
        settings = self._clients.get(client)
        if settings is not None and _matches(settings.deny, ids):
            return False
        applicable = [policy for policy in self._policies if _matches((policy.secret,), ids)]
        if any(client in policy.deny for policy in applicable):
            return False
        if client == DEFAULT_CLIENT:
            return True
        if settings is not None and _matches(settings.allow, ids):
            return True
        return any(client in policy.readers for policy in applicable)


def unused_patterns(
    clients: Sequence[ClientSettings],
    policies: Sequence[SecretPolicySettings],
    prefetched: Sequence[str],
) -> list[str]:
    """Patterns that match none of the listed prefetch ids (for ``check-config`` warnings)."""
    if not prefetched:
        return []
    ids = [identifier for secret in prefetched for identifier in subject_ids(secret)]
    found: list[str] = []
    for client in clients:
        for kind, patterns in (("allow", client.allow), ("deny", client.deny)):
            found.extend(
                f"client {client.name!r} {kind} pattern {pattern!r} matches no prefetched secret"
                for pattern in patterns
                if not _matches((pattern,), ids)
            )
    found.extend(
        f"secret_policies[{index}] secret {policy.secret!r} matches no prefetched secret"
        for index, policy in enumerate(policies)
        if not _matches((policy.secret,), ids)
    )
    return found
