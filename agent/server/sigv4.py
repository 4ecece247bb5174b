"""Verify AWS Signature Version 4 on requests from unchanged AWS SDKs.

The access key id is a client's name and the secret access key is its token,
so the agent recomputes the signature the SDK made and compares in constant
time; the token never travels. botocore can sign but not verify, and its
signer chooses its own header set, so verification follows the specification
directly, with these rules learnt from real SDKs:

- exactly the headers listed in ``SignedHeaders`` are canonicalised, with their
  values as received (``Host`` with its port; whitespace runs folded);
- the date is ``X-Amz-Date``, or ``Date`` when that is what was signed; it must
  match the credential scope's date and lie within ±5 minutes of now;
- the payload hash is computed over the body as received, and
  ``UNSIGNED-PAYLOAD`` is refused (reads are small; there is no reason to
  accept an unsigned body);
- the canonical query line is present even when empty;
- the credential scope's service must be ``secretsmanager``, or ``ssm`` for an
  ``AmazonSSM.*`` target (Parameter Store reads).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, quote

from agent.core.errors import IncompleteSignature, InvalidSignature, SignatureError, UnrecognizedClient

__all__ = ["SignatureError", "SignedRequest", "signing_key", "verify"]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "secretsmanager"
SSM_TARGET_PREFIX = "AmazonSSM."
SSM_SERVICE = "ssm"
MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs from an HTTP request, as received."""

    method: str
    raw_path: str  # path and query exactly as on the request line
    headers: Mapping[str, str]  # case-insensitive mapping
    header_values: Callable[[str], list[str]]  # every value of one header, as received
    body: bytes


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 key derived from a secret for one date, region and service."""
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _request_time(request: SignedRequest, signed: list[str]) -> tuple[str, datetime]:
    amz_date = request.headers.get("X-Amz-Date")
    if amz_date:
        try:
            moment = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError as exc:
            raise IncompleteSignature("X-Amz-Date is not in YYYYMMDDTHHMMSSZ form") from exc
        return amz_date, moment
    if "date" in signed and request.headers.get("Date"):
        try:
            moment = parsedate_to_datetime(request.headers["Date"]).astimezone(UTC)
        except (TypeError, ValueError) as exc:
            raise IncompleteSignature("the Date header cannot be parsed") from exc
        return moment.strftime("%Y%m%dT%H%M%SZ"), moment
    raise IncompleteSignature("the request must carry a signed X-Amz-Date or Date header")


def verify(request: SignedRequest, secret_for: Callable[[str], str | None], now: datetime | None = None) -> str:
    """Check the signature; return the access key id (the client name) or raise :class:`SignatureError`."""
    match = _AUTH.match(request.headers.get("Authorization", "").strip())
    if match is None:
        raise IncompleteSignature("Authorization is not a complete AWS4-HMAC-SHA256 header")
    scope_parts = match["credential"].split("/")
    if len(scope_parts) != 5 or scope_parts[4] != "aws4_request":
        raise IncompleteSignature("the credential scope is malformed")
    access_key, date, region, service, _ = scope_parts
    wanted = SSM_SERVICE if request.headers.get("X-Amz-Target", "").startswith(SSM_TARGET_PREFIX) else SERVICE
    if service != wanted:
        raise InvalidSignature(f"credential scope is for {service!r}, not {wanted}")
    signed = match["signed"].split(";")
    for required in ("host", "x-amz-target"):
        # X-Amz-Target names the operation: unsigned, a captured request could be replayed as another one.
        if required not in signed:
            raise InvalidSignature(f"the {required} header must be signed")
    stamp, moment = _request_time(request, signed)
    if stamp[:8] != date:
        raise InvalidSignature("the credential scope date does not match the request date")
    current = now or datetime.now(UTC)
    if abs(current - moment) > MAX_SKEW:
        raise InvalidSignature(f"Signature expired: {stamp} is not within 5 minutes of now")
    secret = secret_for(access_key)
    if secret is None:
        raise UnrecognizedClient("The security token included in the request is invalid.")
    declared = request.headers.get("X-Amz-Content-Sha256")
    if declared == "UNSIGNED-PAYLOAD" or (declared and declared.startswith("STREAMING-")):
        raise InvalidSignature("unsigned payloads are not accepted")
    payload_hash = hashlib.sha256(request.body).hexdigest()
    if declared and not hmac.compare_digest(declared.encode("utf-8", "surrogateescape"), payload_hash.encode()):
        raise InvalidSignature("X-Amz-Content-Sha256 does not match the body")
    path, _, query = request.raw_path.partition("?")
    canonical_headers = ""
    for name in signed:
        values = request.header_values(name)
        if not values:
            raise InvalidSignature(f"signed header {name!r} is missing")
        canonical_headers += f"{name}:{','.join(_SPACES.sub(' ', v.strip()) for v in values)}\n"
    canonical = "\n".join(
        [request.method, path or "/", _canonical_query(query), canonical_headers, match["signed"], payload_hash]
    )
    scope = "/".join(scope_parts[1:])  # date/region/service/aws4_request, without the key id
    canonical_hash = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    to_sign = "\n".join([ALGORITHM, stamp, scope, canonical_hash])
    expected = hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), match["signature"].encode()):
        raise InvalidSignature(
            "The request signature we calculated does not match the signature you provided.",
        )
    return access_key
