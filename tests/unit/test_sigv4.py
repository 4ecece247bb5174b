"""SigV4 verification of the agent's SDK endpoint, against requests signed by botocore's own signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from agent.server.sigv4 import SignatureError, SignedRequest, verify


def botocore_signed(body: bytes = b'{"SecretId":"x"}', secret: str = "s3cret", **headers: str) -> SignedRequest:
    """A request signed by botocore's own signer, as the agent would receive it."""
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:2773/",
        data=body,
        headers={
            "X-Amz-Target": "secretsmanager.GetSecretValue",
            "Content-Type": "application/x-amz-json-1.1",
            **headers,
        },
    )
    SigV4Auth(Credentials("app", secret), "secretsmanager", "us-east-1").add_auth(request)
    received = CIMultiDict({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
    received["Host"] = "127.0.0.1:2773"
    return SignedRequest("POST", "/", received, lambda name: list(received.getall(name, [])), request.body)


def test_sigv4_accepts_botocore_and_rejects_tampering() -> None:
    """A botocore signature verifies; a changed body, a stale date or UNSIGNED-PAYLOAD do not."""
    assert verify(botocore_signed(), lambda key: "s3cret" if key == "app" else None) == "app"
    tampered = botocore_signed()
    tampered = SignedRequest(tampered.method, tampered.raw_path, tampered.headers, tampered.header_values, b"{}")
    with pytest.raises(SignatureError) as caught:
        verify(tampered, lambda _key: "s3cret")
    assert caught.value.code == "InvalidSignatureException"
    with pytest.raises(SignatureError, match="expired"):
        verify(botocore_signed(), lambda _key: "s3cret", now=datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(SignatureError, match="unsigned"):
        verify(botocore_signed(**{"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"}), lambda _key: "s3cret")
    with pytest.raises(SignatureError) as unknown:
        verify(botocore_signed(), lambda _key: None)
    assert unknown.value.code == "UnrecognizedClientException"


def test_sigv4_requires_a_signed_operation() -> None:
    """X-Amz-Target must be among the signed headers: unsigned, a request could be replayed as another operation."""
    request = AWSRequest(
        method="POST", url="http://127.0.0.1:2773/", data=b"{}", headers={"Content-Type": "application/x-amz-json-1.1"}
    )
    SigV4Auth(Credentials("app", "s3cret"), "secretsmanager", "us-east-1").add_auth(request)
    received = CIMultiDict({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
    received["Host"] = "127.0.0.1:2773"
    received["X-Amz-Target"] = "secretsmanager.GetSecretValue"  # added after signing
    signed = SignedRequest("POST", "/", received, lambda name: list(received.getall(name, [])), request.body)
    with pytest.raises(SignatureError, match="x-amz-target"):
        verify(signed, lambda _key: "s3cret")
