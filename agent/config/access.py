"""Settings for who may call: token sources, ``[[clients]]`` and ``[[secret_policies]]``.

Part of the config package (the loader calls in here). Every problem names its
key as ``clients[1].uid`` or ``secret_policies[0].readers``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config.kinds import Problems, check, optional, positive, string_list, table_array, uid_or_gid

TOKEN_FILE_MAX_MODE = 0o640
DEFAULT_CLIENT = "default"
CLIENT_KEYS = frozenset({"name", "token", "uid", "gid", "allow", "deny", "rate_per_second", "roles"})
POLICY_KEYS = frozenset({"secret", "readers", "deny"})
_RATE = optional(positive)
_PATTERNS = optional(string_list)

_TOKEN_HOWTO = (
    'provide a token with auth.token = "env:NAME" (and export NAME) or '
    'auth.token = "file:///path/to/token" (a file holding the token)'
)


@dataclass(frozen=True)
class TokenRef:
    """Where a token comes from. ``value`` is set for ``env:`` sources.

    File tokens are read by the authenticator (so they can be re-read when the
    file changes); configuration only checks the file is usable.
    """

    spec: str
    kind: Literal["env", "file"]
    location: str
    value: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ClientSettings:
    """One ``[[clients]]`` entry: how to recognise it and what it may read."""

    name: str
    token: TokenRef | None = None
    uid: int | None = None
    gid: int | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    rate_per_second: float | None = None
    roles: tuple[str, ...] = ()  # role ARNs (or globs on them) this client may name as roleArn


@dataclass(frozen=True)
class SecretPolicySettings:
    """One ``[[secret_policies]]`` entry: a resource policy on matching secrets."""

    secret: str
    readers: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def resolve_token(
    spec: str, env: Mapping[str, str], problems: Problems, warnings: list[str], *, key: str = "auth.token"
) -> TokenRef | None:
    """Check a ``env:NAME`` / ``file:///path`` token source; None (and a problem) if unusable."""
    if spec.startswith("env:"):
        # env:A,B,C: the first variable set and non-empty, in order (AWS's agent's ssrf_env_variables).
        names = [part.strip() for part in spec[4:].split(",")]
        if not all(names):
            problems.append((key, f"'env:' needs variable names (env:NAME or env:A,B); {_TOKEN_HOWTO}"))
            return None
        name = next((n for n in names if env.get(n, "").strip()), None)
        if name is None:
            unset = names[0] if len(names) == 1 else "none of " + ", ".join(names)
            problems.append((key, f"environment variable {unset} is unset or empty; {_TOKEN_HOWTO}"))
            return None
        value = env[name].strip()
        if value.startswith("file://"):
            # As AWS's agent: a variable holding file:///path names the token file (re-read when it changes).
            ref = resolve_token(value, env, problems, warnings, key=f"{key} ({name})")
            return None if ref is None else TokenRef(spec=spec, kind="file", location=ref.location)
        return TokenRef(spec=spec, kind="env", location=name, value=value)
    if spec.startswith("file://"):
        path = spec[len("file://") :]
        if not path.startswith("/"):
            problems.append((key, f"file token needs an absolute path (file:///...), got {spec!r}"))
            return None
        try:
            info = os.stat(path)
            with open(path, "rb") as fh:
                content = fh.read().strip()
        except OSError as exc:
            problems.append((key, f"cannot read token file {path}: {exc.strerror}; {_TOKEN_HOWTO}"))
            return None
        if not content:
            problems.append((key, f"token file {path} is empty; {_TOKEN_HOWTO}"))
            return None
        if stat.S_IMODE(info.st_mode) & ~TOKEN_FILE_MAX_MODE:
            warnings.append(
                f"token file {path} has mode {stat.S_IMODE(info.st_mode):04o}, more open than "
                f"{TOKEN_FILE_MAX_MODE:04o}; run: chmod 0640 {path}"
            )
        return TokenRef(spec=spec, kind="file", location=path)
    # The value itself is not echoed: a user may have pasted the token here by mistake.
    problems.append((key, f"expected 'env:NAME' or 'file:///path', got a value of another form; {_TOKEN_HOWTO}"))
    return None


def parse_clients(
    raw: Any, env: Mapping[str, str], problems: Problems, warnings: list[str]
) -> tuple[ClientSettings, ...]:
    """Validate the ``[[clients]]`` array."""
    clients: list[ClientSettings] = []
    seen: set[str] = set()
    for at, entry in table_array(raw, "clients", CLIENT_KEYS, problems):
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{at}.name", "every client needs a non-empty name"))
            continue
        at = f"{at} ({name})"
        if name == DEFAULT_CLIENT:
            problems.append((f"{at}.name", "'default' is reserved for auth.token; pick another name"))
        elif name in seen:
            problems.append((f"{at}.name", "duplicate client name"))
        seen.add(name)
        token = None
        if entry.get("token") is not None:
            if isinstance(entry["token"], str):
                token = resolve_token(entry["token"], env, problems, warnings, key=f"{at}.token")
            else:
                problems.append((f"{at}.token", "expected 'env:NAME' or 'file:///path'"))
        uid = check(uid_or_gid, entry.get("uid"), f"{at}.uid", problems)
        gid = check(uid_or_gid, entry.get("gid"), f"{at}.gid", problems)
        if entry.get("token") is None and uid is None and gid is None:
            problems.append((at, "a client needs a token, a uid or a gid to be recognised by"))
        clients.append(
            ClientSettings(
                name=name,
                token=token,
                uid=uid,
                gid=gid,
                allow=check(_PATTERNS, entry.get("allow"), f"{at}.allow", problems) or (),
                deny=check(_PATTERNS, entry.get("deny"), f"{at}.deny", problems) or (),
                rate_per_second=check(_RATE, entry.get("rate_per_second"), f"{at}.rate_per_second", problems),
                roles=_roles(entry.get("roles"), f"{at}.roles", problems),
            )
        )
    return tuple(clients)


def _roles(raw: Any, key: str, problems: Problems) -> tuple[str, ...]:
    """A client's ``roles``: IAM role ARNs, or globs on them; each must start with ``arn:``."""
    roles = check(_PATTERNS, raw, key, problems) or ()
    for role in roles:
        if not role.startswith("arn:"):
            problems.append((key, f"expected IAM role ARNs (or globs on them) starting with 'arn:', got {role!r}"))
    return roles


def parse_secret_policies(raw: Any, problems: Problems) -> tuple[SecretPolicySettings, ...]:
    """Validate the ``[[secret_policies]]`` array."""
    policies = []
    for at, entry in table_array(raw, "secret_policies", POLICY_KEYS, problems):
        secret = entry.get("secret")
        if not isinstance(secret, str) or not secret:
            problems.append((f"{at}.secret", "every policy needs a secret name, glob or ARN"))
            continue
        policies.append(
            SecretPolicySettings(
                secret=secret,
                readers=check(_PATTERNS, entry.get("readers"), f"{at}.readers", problems) or (),
                deny=check(_PATTERNS, entry.get("deny"), f"{at}.deny", problems) or (),
            )
        )
    return tuple(policies)
