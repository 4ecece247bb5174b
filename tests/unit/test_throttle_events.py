"""Pure logic: backoff bounds, the attempt pacer's window, and EventBridge event parsing."""

from __future__ import annotations

import json
import random

import pytest

from agent.core.errors import UpstreamClosed
from agent.upstream.events import parse_event
from agent.upstream.throttle import AttemptPacer, Backoff


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_backoff_full_jitter_bounds() -> None:
    """Each delay is drawn from [0, min(cap, base * 2**n)] and reset() starts over."""
    backoff = Backoff(base=1.0, cap=10.0, rng=random.Random(1))
    ceilings = [1, 2, 4, 8, 10, 10]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_backoff_delays_are_spread() -> None:
    """Full jitter spreads delays rather than synchronising a fleet."""
    delays = {round(Backoff(base=1, cap=100, rng=random.Random(seed)).next_delay(), 3) for seed in range(20)}
    assert len(delays) > 15


def test_pacer_idle_until_throttled() -> None:
    """Without a throttle, attempts are never delayed."""
    fake = FakeTime()
    pacer = AttemptPacer(clock=fake.clock, sleep=fake.sleep)
    for _ in range(50):
        pacer._before_send()
    assert fake.slept == []


def test_pacer_caps_attempts_per_second_once_throttled() -> None:
    """After a throttle, no one-second window holds more than 5 attempts, earlier ones counted."""
    fake = FakeTime()
    pacer = AttemptPacer(clock=fake.clock, sleep=fake.sleep)
    sent: list[float] = []
    for _ in range(8):  # a burst before anyone knew
        pacer._before_send()
        sent.append(fake.now)
    pacer._response_received(parsed_response={"Error": {"Code": "ThrottlingException"}})
    assert pacer.throttled
    for _ in range(30):
        pacer._before_send()
        sent.append(fake.now)
    paced = sent[8:]
    for start in paced:
        assert sum(1 for t in sent if start <= t < start + 1.0) <= 5
    assert paced[-1] - paced[0] >= 5.0


def test_pacer_recovers_after_quiet_period() -> None:
    """Pacing ends once quiet_seconds pass without another throttle."""
    fake = FakeTime()
    pacer = AttemptPacer(quiet_seconds=30, clock=fake.clock, sleep=fake.sleep)
    pacer.note_throttle()
    fake.now += 31
    assert not pacer.throttled
    before = len(fake.slept)
    for _ in range(20):
        pacer._before_send()
    assert len(fake.slept) == before


def test_pacer_refuses_after_close() -> None:
    """After close() no attempt is sent (retries of calls still running included)."""
    pacer = AttemptPacer()
    pacer.close()
    with pytest.raises(UpstreamClosed):
        pacer._before_send()


def cloudtrail(event_name: str, **detail: object) -> str:
    return json.dumps({"source": "aws.secretsmanager", "detail": {"eventName": event_name, **detail}})


@pytest.mark.parametrize("key", ["aRN", "arn", "ARN"])
def test_parse_arn_spellings(key: str) -> None:
    """The ARN is found in responseElements however it is spelt."""
    arn = "arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf"
    parsed = parse_event(cloudtrail("PutSecretValue", responseElements={key: arn}))
    assert parsed == ("PutSecretValue", [arn])


def test_parse_names_and_rotation_succeeded() -> None:
    """secretId in requestParameters and SecretId in additionalEventData count as references."""
    assert parse_event(cloudtrail("UpdateSecretVersionStage", requestParameters={"secretId": "prod/db"})) == (
        "UpdateSecretVersionStage",
        ["prod/db"],
    )
    rotated = cloudtrail("RotationSucceeded", additionalEventData={"SecretId": "arn:aws:x"})
    assert parse_event(rotated) == ("RotationSucceeded", ["arn:aws:x"])


def test_parse_sns_wrapped() -> None:
    """An event wrapped in an SNS notification is unwrapped."""
    wrapped = json.dumps(
        {"Type": "Notification", "Message": cloudtrail("DeleteSecret", requestParameters={"secretId": "s"})}
    )
    assert parse_event(wrapped) == ("DeleteSecret", ["s"])


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"source": "aws.ec2", "detail": {"eventName": "PutSecretValue"}}),
        cloudtrail("GetSecretValue", requestParameters={"secretId": "s"}),
        cloudtrail("TagResource", requestParameters={"secretId": "s"}),
        json.dumps([1, 2]),
    ],
    ids=["not-json", "other-source", "read-event", "tag-event", "not-object"],
)
def test_parse_ignores_unrelated(body: str) -> None:
    """Other sources, read-only or irrelevant events and junk are not acted on."""
    assert parse_event(body) is None


def test_undecodable_token_header_is_a_wrong_token_not_a_crash() -> None:
    """Header bytes aiohttp kept as surrogates are compared as bytes and simply do not match."""
    from agent.access.identity import Authenticator
    from agent.config import AuthSettings
    from agent.config.access import TokenRef

    auth = Authenticator(
        AuthSettings(token=TokenRef("env:T", "env", "T", "t0ken"), headers=("X-Aws-Parameters-Secrets-Token",))
    )
    who = auth.identify({"X-Aws-Parameters-Secrets-Token": "t0ken\udcff"})
    assert (who.client, who.how) == (None, "wrong_token")
    assert auth.identify({"Authorization": "Bearer t0ken"}).client == "default"
