"""The agent's botocore clients: made without any network call, STS only when something needs it."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import load_settings
from agent.upstream import session as aws_session
from agent.upstream.botodata import new_session


def test_sts_client_is_made_on_first_use_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_clients makes Secrets Manager's client; STS's (the check, roleArn reads) waits for its first use."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    made: list[str] = []

    def recording_session() -> Any:
        core = new_session()
        core.register("creating-client-class", lambda event_name, **_: made.append(event_name.rsplit(".", 1)[1]))
        return core

    monkeypatch.setattr(aws_session, "new_session", recording_session)
    settings = load_settings(
        environ={"T": "t0k3n-t0k3n"},
        overrides={"auth.token": "env:T", "aws.region": "eu-west-1", "aws.endpoint_url": "http://127.0.0.1:9"},
    )
    clients = aws_session.build_clients(settings.aws)
    assert made == ["secrets-manager"]
    sts = clients.sts()
    assert clients.sts() is sts and sts.meta.service_model.service_name == "sts"
    assert made == ["secrets-manager", "sts"]
