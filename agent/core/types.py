"""Plain value types shared by every layer. Imports nothing of ours."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

AWSCURRENT = "AWSCURRENT"
AWSPREVIOUS = "AWSPREVIOUS"
AWSPENDING = "AWSPENDING"


def format_rfc3339(epoch: float, *, millis: bool = False) -> str:
    """Epoch seconds as RFC 3339 UTC: ``2026-11-30T23:59:01Z``, or ``…01.250Z`` with ``millis``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if millis:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 time (``Z`` or an offset) as epoch seconds; ValueError if it is not one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class SecretValue:
    """One version of one secret, as GetSecretValue returns it.

    ``secret_string``/``secret_binary`` are excluded from ``repr`` so that an
    accidental ``log.info(value=...)`` or traceback never prints them.
    """

    arn: str
    name: str
    version_id: str
    version_stages: tuple[str, ...]
    created_date: float | None
    secret_string: str | None = field(default=None, repr=False)
    secret_binary: bytes | None = field(default=None, repr=False)

    def aws_fields(self, *, created_as_string: bool) -> dict[str, object]:
        """The GetSecretValue response fields; ``SecretBinary`` base64.

        AWS's agent sends ``CreatedDate`` as epoch seconds *in a string*; the
        Secrets Manager JSON protocol (what SDKs parse) as a number.
        """
        body: dict[str, object] = {"ARN": self.arn, "Name": self.name, "VersionId": self.version_id}
        if self.secret_string is not None:
            body["SecretString"] = self.secret_string
        if self.secret_binary is not None:
            body["SecretBinary"] = base64.b64encode(self.secret_binary).decode("ascii")
        body["VersionStages"] = list(self.version_stages)
        if self.created_date is not None:
            body["CreatedDate"] = f"{self.created_date:.3f}" if created_as_string else self.created_date
        return body

    @cached_property
    def wire_json(self) -> bytes:
        """The AWS-agent-compatible JSON body, rendered once and reused for every read."""
        return json.dumps(self.aws_fields(created_as_string=True), separators=(",", ":")).encode()

    @cached_property
    def json_fields(self) -> dict[str, object] | None:
        """The secret string parsed as a JSON object, or None if it is not one."""
        if self.secret_string is None:
            return None
        try:
            parsed = json.loads(self.secret_string)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


@dataclass(frozen=True)
class Selector:
    """Which version of a secret is asked for: by id, else by stage."""

    version_id: str | None = None
    version_stage: str | None = None

    @cached_property  # asked on every read; the selector is frozen (the value lands in __dict__, not a field)
    def cache_suffix(self) -> str:
        """Key part that tells versions of one secret apart in the cache."""
        if self.version_id:
            return f"id:{self.version_id}"
        return f"stage:{self.version_stage or AWSCURRENT}"

    @property
    def upstream_stage(self) -> str | None:
        """The stage to ask upstream for.

        With neither id nor stage we ask for ``AWSCURRENT`` explicitly: an
        unstaged read can lag a stage move (seen on moto), an explicit one
        cannot.
        """
        if self.version_id:
            return self.version_stage
        return self.version_stage or AWSCURRENT


CURRENT = Selector()


def partial_arn(arn: str) -> str:
    """The ARN without the 6-character random suffix Secrets Manager appends."""
    return arn[:-7] if len(arn) > 7 and arn[-7] == "-" else arn


def looks_like_arn(secret_id: str) -> bool:
    """True when ``secret_id`` is a Secrets Manager secret ARN (full or partial)."""
    return secret_id.startswith("arn:") and ":secret:" in secret_id
