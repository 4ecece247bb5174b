"""The hot path answers exactly as aiohttp would: one corpus, two agents, compared byte for byte.

One agent runs with ``[server] fast_path = true`` (the default), one with
``false``; both read the same moto secrets with the same clients, policies,
rate limits and audit trail. Every request of the corpus is sent as raw bytes
over a fresh socket (TCP, or the Unix socket), in the same order to both, so
both caches go through the same states. The responses are compared whole:
status line, every header in order (the values of ``Date``, ``X-Request-Id``
and ``Age``, clock readings, aside), body. Then the audit records, the
request log lines, the metric counts and what ``/status`` counts.

The targeted tests after it check that the hot path really answers (so the
comparison cannot pass by sending everything to aiohttp) and that a
connection it hands off stays with aiohttp.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agent.core.types import CURRENT
from agent.dev.emulator import MotoServer
from tests.support.agent import TOKEN, AgentHandle, serve_agent
from tests.support.configs import write_token

READER = "reader-" + "c3" * 12
LIMITED = "limited-" + "d4" * 12
CLOCK_HEADERS = frozenset({"date", "x-request-id", "age"})
# Counters that differ between the two agents by design (the hot path's own) or by timing.
NOT_COMPARED = ("secrets_agent_fast_path_answers", "secrets_agent_request_seconds", "secrets_agent_staleness")
STEP_TIMEOUT = 30.0  # a hang guard: no case waits on a server-side timeout


def config(tmp_path: Path, audit: Path) -> str:
    """A token client with a deny, a client with an all but empty rate budget, a uid client, an audit file."""
    reader = write_token(tmp_path / "reader", READER)
    limited = write_token(tmp_path / "limited", LIMITED)
    return f"""
[[clients]]
name = "reader"
token = "file://{reader}"
allow = ["app/*", "shared/*"]

[[clients]]
name = "limited"
token = "file://{limited}"
allow = ["app/*"]
rate_per_second = 0.001

[[clients]]
name = "local"
uid = {os.getuid()}
allow = ["app/plain"]

[[secret_policies]]
secret = "app/denied"
deny = ["reader"]

[audit]
path = "{audit}"
on_failure = "deny"
"""


@dataclass
class Secrets:
    """What the corpus reads: names, ARNs and version ids from moto."""

    plain_arn: str
    current: str
    previous: str


@pytest.fixture
def secrets(sm: Any) -> Secrets:
    sm.create_secret(Name="app/plain", SecretString="plain-value")
    sm.create_secret(Name="app/json", SecretString=json.dumps({"user": "u", "password": "p"}))
    sm.create_secret(Name="app/bin", SecretBinary=b"\x00\x01binary")
    sm.create_secret(Name="app/denied", SecretString="denied-value")
    sm.create_secret(Name="shared/x", SecretString="shared-value")
    first = sm.create_secret(Name="app/versioned", SecretString="v1")
    second = sm.put_secret_value(SecretId="app/versioned", SecretString="v2")
    plain = sm.describe_secret(SecretId="app/plain")
    return Secrets(plain_arn=plain["ARN"], current=second["VersionId"], previous=first["VersionId"])


def request(
    target: str,
    *,
    token: str | None = TOKEN,
    method: str = "GET",
    version: str = "1.1",
    headers: Sequence[tuple[str, str]] = (),
    host: str | None = "localhost",
) -> bytes:
    """Raw request bytes: the request line, Host, the token header, ``headers``."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if token is not None:
        lines.append(f"X-Aws-Parameters-Secrets-Token: {token}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Step:
    """Bytes sent (chunks, with a pause between), then this many responses read (fewer if the agent closes)."""

    chunks: list[bytes]
    responses: int = 1


@dataclass
class Case:
    """One connection: its steps, over TCP or the Unix socket."""

    name: str
    steps: list[Step]
    unix: bool = False


def one(name: str, raw: bytes, *, responses: int = 1, unix: bool = False) -> Case:
    return Case(name, [Step([raw], responses)], unix)


def corpus(s: Secrets) -> list[Case]:
    """Good and bad requests, in an order whose cache effects both agents share."""
    get = "/secretsmanager/get?secretId="
    hit = request("/v1/app/plain")
    cases = [
        one("ping", request("/ping", token=None)),
        one("healthz", request("/healthz", token=None)),
        one("readyz", request("/readyz", token=None)),
        one("metrics without token", request("/metrics", token=None)),
        one("miss by query", request(get + "app/plain")),
        one("hit by query", request(get + "app/plain")),
        one("hit by path", hit),
        one("json miss", request("/v1/app/json")),
        one("json hit", request("/v1/app/json")),
        one("binary miss", request(get + "app/bin")),
        one("binary hit", request(get + "app/bin")),
        one("stage current", request(get + "app/versioned&versionStage=AWSCURRENT")),
        one("stage current again", request(get + "app/versioned&versionStage=AWSCURRENT")),
        one("stage previous", request(get + "app/versioned&versionStage=AWSPREVIOUS")),
        one("stage previous again", request("/v1/app/versioned?versionStage=AWSPREVIOUS")),
        one("version id", request(get + f"app/versioned&versionId={s.previous}")),
        one("version id again", request(get + f"app/versioned&versionId={s.previous}")),
        one("version id and stage", request(get + f"app/versioned&versionId={s.current}&versionStage=AWSCURRENT")),
        one("refreshNow true", request(get + "app/plain&refreshNow=true")),
        one("refreshNow false", request(get + "app/plain&refreshNow=false")),
        one("refreshNow FALSE", request("/v1/app/plain?refreshNow=FALSE")),
        one("refreshNow bad", request(get + "app/plain&refreshNow=maybe")),
        one("empty versionId", request(get + "app/plain&versionId=")),
        one("empty versionStage", request("/v1/app/plain?versionStage=")),
        one("unknown parameter", request(get + "app/plain&colour=red")),
        one("repeated parameter", request(get + "app/plain&secretId=app/json")),
        one("no secretId", request("/secretsmanager/get")),
        one("empty secretId", request(get)),
        one("secretId without =", request("/secretsmanager/get?secretId")),
        one("empty query", request("/v1/app/plain?")),
        one("trailing &", request(get + "app/plain&")),
        one("missing secret", request("/v1/app/nothing-here")),
        one("missing secret again", request("/v1/app/nothing-here")),
        one("escaped slash in path", request("/v1/app%2Fplain")),
        one("escaped slash in query", request(get + "app%2Fplain")),
        one("plus in query", request(get + "app/plain+x")),
        one("plus in path", request("/v1/app/plain+x")),
        one("full ARN", request(get + s.plain_arn)),
        one("full ARN again", request("/v1/" + s.plain_arn)),
        one("plain value route", request("/value/app/plain")),
        one("roleArn malformed", request(get + "app/plain&roleArn=nope")),
        one("no token", request("/v1/app/plain", token=None)),
        one("wrong token", request("/v1/app/plain", token="wrong")),
        one("bearer token", request("/v1/app/plain", token=None, headers=[("Authorization", f"Bearer {TOKEN}")])),
        one("vault header", request("/v1/app/plain", token=None, headers=[("X-Vault-Token", TOKEN)])),
        one("two token headers", request("/v1/app/plain", headers=[("X-Vault-Token", "wrong")])),
        one("reader allowed", request("/v1/app/plain", token=READER)),
        one("reader allowed again", request("/v1/app/plain", token=READER)),
        one("reader denied by policy", request("/v1/app/denied", token=READER)),
        one("reader outside its grant", request("/v1/other/x", token=READER)),
        one("reader shared", request("/v1/shared/x", token=READER)),
        one("reader shared again", request("/v1/shared/x", token=READER)),
        one("limited first", request("/v1/app/plain", token=LIMITED)),
        one("limited second", request("/v1/app/plain", token=LIMITED)),
        one("limited third", request("/v1/app/json", token=LIMITED)),
        one("forwarded", request("/v1/app/plain", headers=[("X-Forwarded-For", "10.0.0.1")])),
        one("forwarded health", request("/ping", token=None, headers=[("X-Forwarded-For", "10.0.0.1")])),
        one("foreign host", request("/v1/app/plain", host="evil.example")),
        one("foreign host ping", request("/ping", token=None, host="evil.example")),
        one("host with port", request("/v1/app/plain", host="localhost:2773")),
        one("host v6", request("/v1/app/plain", host="[::1]:2773")),
        one("no host", request("/v1/app/plain", host=None)),
        one("two hosts", request("/v1/app/plain", headers=[("Host", "localhost")])),
        one("request id", request("/v1/app/plain", headers=[("X-Request-Id", "caller-chosen-1")])),
        one("request id too long", request("/v1/app/plain", headers=[("X-Request-Id", "x" * 100)])),
        one("user agent and accept", request("/v1/app/plain", headers=[("User-Agent", "t/1"), ("Accept", "*/*")])),
        one("unknown header", request("/v1/app/plain", headers=[("X-Other", "1")])),
        one(
            "non-ascii header",
            b"GET /v1/app/plain HTTP/1.1\r\nHost: localhost\r\nUser-Agent: \xc3\xa9\r\n"
            b"X-Aws-Parameters-Secrets-Token: " + TOKEN.encode() + b"\r\n\r\n",
        ),
        one("POST", request("/v1/app/plain", method="POST", headers=[("Content-Length", "0")])),
        one("PUT", request("/v1/app/plain", method="PUT", headers=[("Content-Length", "0")])),
        one("DELETE", request("/v1/app/plain", method="DELETE")),
        one("OPTIONS ping", request("/ping", method="OPTIONS", token=None)),
        one("lower-case method", request("/v1/app/plain", method="get")),
        one("unknown path", request("/nope")),
        one("prefix only", request("/v1/")),
        one("double slash", request("//v1/app/plain")),
        one("dot segment", request("/v1/./app/plain")),
        one("dot-dot segment", request("/v1/x/../app/plain")),
        one("fragment", request("/v1/app/plain#frag")),
        one("absolute form", request("http://localhost/v1/app/plain")),
        one("HTTP/1.0", request("/v1/app/plain", version="1.0")),
        one("HTTP/1.0 keep-alive", request("/v1/app/plain", version="1.0", headers=[("Connection", "keep-alive")])),
        one("HTTP/1.0 ping", request("/ping", version="1.0", token=None)),
        one("connection close", request("/v1/app/plain", headers=[("Connection", "close")])),
        one("connection keep-alive", request("/v1/app/plain", headers=[("Connection", "keep-alive")])),
        one("expect", request("/v1/app/plain", headers=[("Expect", "100-continue")])),
        one("upgrade", request("/v1/app/plain", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")])),
        one("GET with body", request("/v1/app/plain", headers=[("Content-Length", "5")]) + b"hello"),
        one(
            "CL and TE",
            request("/v1/app/plain", headers=[("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
            + b"0\r\n\r\n",
        ),
        one("duplicate CL", request("/v1/app/plain", headers=[("Content-Length", "0"), ("Content-Length", "5")])),
        one("chunked GET", request("/v1/app/plain", headers=[("Transfer-Encoding", "chunked")]) + b"0\r\n\r\n"),
        one(
            "smuggled second request",
            request("/v1/app/plain", headers=[("Content-Length", "44")]) + request("/v1/app/json")[:44],
        ),
        one("oversized header", request("/v1/app/plain", headers=[("User-Agent", "u" * 9000)])),
        one("oversized target", request("/v1/app/" + "p" * 9000)),
        one("NUL in header", request("/v1/app/plain", headers=[("User-Agent", "a\x00b")])),
        one("NUL in target", request("/v1/app/pl\x00ain")),
        one(
            "bare LF",
            b"GET /v1/app/plain HTTP/1.1\nHost: localhost\nX-Aws-Parameters-Secrets-Token: " + TOKEN.encode() + b"\n\n",
        ),
        one("folded header", request("/v1/app/plain", headers=[("User-Agent", "a\r\n b")])),
        one("space before colon", request("/v1/app/plain", headers=[("User-Agent ", "a")])),
        one("leading CRLF", b"\r\n" + hit),
        one("HTTP/0.9", b"GET /v1/app/plain\r\n\r\n"),
        one("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
        one("pipelined hits", hit + hit, responses=2),
        one("pipelined hit and miss", hit + request("/v1/shared/x"), responses=2),
        Case("partial hit", [Step([hit[:20], hit[20:]])]),
        Case("partial then pipelined", [Step([hit[:-2], hit[-2:] + hit], responses=2)]),
        Case("keep-alive sequence", [Step([hit]), Step([hit]), Step([request("/v1/app/nothing-here")]), Step([hit])]),
        Case("keep-alive ping then read", [Step([request("/ping", token=None)]), Step([hit]), Step([hit])]),
        Case("keep-alive denied then hit", [Step([request("/v1/app/plain", token="wrong")]), Step([hit])]),
        Case(
            "keep-alive hit then close",
            [Step([hit]), Step([request("/v1/app/json", headers=[("Connection", "close")])])],
        ),
        # The Unix socket: peer credentials identify "local" without a token.
        one("unix ping", request("/ping", token=None), unix=True),
        one("unix hit", hit, unix=True),
        one("unix by uid", request("/v1/app/plain", token=None), unix=True),
        one("unix by uid again", request("/secretsmanager/get?secretId=app/plain", token=None), unix=True),
        one("unix uid outside its grant", request("/v1/app/json", token=None), unix=True),
        one("unix foreign host", request("/v1/app/plain", host="evil.example"), unix=True),
        one("unix wrong token", request("/v1/app/plain", token="wrong"), unix=True),
        one("unix forwarded", request("/v1/app/plain", headers=[("X-Forwarded-For", "1.2.3.4")]), unix=True),
        one("unix pipelined", hit + hit, responses=2, unix=True),
        Case("unix partial", [Step([hit[:10], hit[10:]])], unix=True),
        Case("unix keep-alive", [Step([hit]), Step([request("/v1/app/json", token=None)]), Step([hit])], unix=True),
    ]
    return cases


@dataclass
class Response:
    """One parsed response."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class ResponseReader:
    """httptools callbacks collecting responses from a byte stream."""

    def __init__(self) -> None:
        self.done: list[Response] = []
        self._current = Response()
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers.append((name.decode(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        self._current.status = self.parser.get_status_code()
        self.done.append(self._current)


async def exchange(agent: AgentHandle, case: Case) -> list[Any]:
    """Run one case on a fresh connection; what came back, normalised (clock headers masked)."""
    if case.unix:
        assert agent.started.unix_socket is not None
        reader, writer = await asyncio.open_unix_connection(agent.started.unix_socket)
    else:
        reader, writer = await asyncio.open_connection(*agent.started.tcp)
    collected = ResponseReader()
    closed = False
    try:
        for step in case.steps:
            want = len(collected.done) + step.responses
            for index, chunk in enumerate(step.chunks):
                if index:
                    await asyncio.sleep(0.05)  # arrives as a separate read
                writer.write(chunk)
                await writer.drain()
            while len(collected.done) < want and not closed:
                data = await asyncio.wait_for(reader.read(65536), STEP_TIMEOUT)
                if not data:
                    closed = True
                    break
                collected.parser.feed_data(data)
            if closed:
                break
    finally:
        writer.close()
        await writer.wait_closed()
    return [
        (r.status, [(n, "*" if n.lower() in CLOCK_HEADERS else v) for n, v in r.headers], r.body)
        for r in collected.done
    ] + [("closed",) if closed else ("open",)]


def counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Counter samples of a /metrics body (the timing ones aside)."""
    found = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter" or family.name.startswith(NOT_COMPARED):
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The audit file's records without their clock fields."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.pop("time", None)
        record.pop("request_id", None)
    return records


@dataclass
class Pair:
    """The agent with the hot path and the one without, with their audit files."""

    fast: AgentHandle
    slow: AgentHandle
    fast_audit: Path
    slow_audit: Path


@pytest.fixture
async def pair(moto: MotoServer, short_tmp: Path, tmp_path: Path) -> AsyncIterator[Pair]:
    async with AsyncExitStack() as stack:
        agents = []
        for name, on in (("fast", True), ("slow", False)):
            sockets = short_tmp / name
            sockets.mkdir()
            audit = tmp_path / f"{name}-audit.log"
            agent = await stack.enter_async_context(
                serve_agent(
                    moto.url,
                    sockets,
                    config=config(tmp_path, audit),
                    server__fast_path=on,
                    cache__ttl_seconds=3600,
                    refresh__mode="ttl",
                    log__summary_interval_seconds=3600,
                )
            )
            agents.append((agent, audit))
        yield Pair(agents[0][0], agents[1][0], agents[0][1], agents[1][1])


async def metrics_text(agent: AgentHandle) -> str:
    reply = await agent.get("/metrics")
    assert reply.status == 200
    return reply.text


async def status_counts(agent: AgentHandle) -> dict[str, Any]:
    """What /status counts (cache hits and misses, reads per secret and client), without its clock readings."""
    reply = await agent.get("/status")
    assert reply.status == 200, reply.text
    status = reply.json()
    reads = {
        secret["name"]: sorted((r["client"], r["last_hour"], r["last_day"], r["denied"]) for r in secret["reads"])
        for secret in status["secrets"]
    }
    return {"hits": status["cache"]["hits"], "misses": status["cache"]["misses"], "reads": reads}


def request_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request log lines, without the fields that are clock readings."""
    return [
        {k: v for k, v in entry.items() if k not in ("latency_ms", "request_id", "timestamp")}
        for entry in logs
        if entry.get("event") == "request"
    ]


async def test_both_paths_answer_the_corpus_identically(pair: Pair, secrets: Secrets) -> None:
    """Every corpus request gets the same status, headers, body, audit records, log lines and metrics either way."""
    cases = corpus(secrets)
    results: dict[str, list[list[Any]]] = {}
    lines: dict[str, list[dict[str, Any]]] = {}
    for label, agent in (("fast", pair.fast), ("slow", pair.slow)):
        with capture_logs() as logs:
            results[label] = [await exchange(agent, case) for case in cases]
        lines[label] = request_lines(logs)
    differ = [
        (case.name, fast, slow)
        for case, fast, slow in zip(cases, results["fast"], results["slow"], strict=True)
        if fast != slow
    ]
    assert not differ, [name for name, _fast, _slow in differ]
    assert lines["fast"] == lines["slow"]
    assert audit_records(pair.fast_audit) == audit_records(pair.slow_audit)
    assert counters(await metrics_text(pair.fast)) == counters(await metrics_text(pair.slow))
    assert await status_counts(pair.fast) == await status_counts(pair.slow)
    # The comparison covered answers of the hot path, not only aiohttp's.
    assert await pair.fast.metric("secrets_agent_fast_path_answers_total") >= 20
    assert await pair.slow.metric("secrets_agent_fast_path_answers_total") == 0


async def answered(agent: AgentHandle) -> float:
    return await agent.metric("secrets_agent_fast_path_answers_total")


async def test_fast_path_answers_fresh_hits_only(pair: Pair, secrets: Secrets) -> None:
    """A miss goes to aiohttp; the hit after it, and a health probe, are answered by the hot path (both listeners)."""
    agent = pair.fast
    hit = request("/v1/app/plain")
    before = await answered(agent)
    await exchange(agent, one("miss", hit))
    assert await answered(agent) == before
    for unix in (False, True):
        reply = await exchange(agent, one("hit", hit, unix=unix))
        assert reply[0][0] == 200 and json.loads(reply[0][2])["SecretString"] == "plain-value"
    await exchange(agent, one("ping", request("/ping", token=None)))
    assert await answered(agent) == before + 3


async def test_handed_off_connection_stays_with_aiohttp(pair: Pair, secrets: Secrets) -> None:
    """After the hot path hands a connection to aiohttp (a miss), later hits on it are aiohttp's."""
    agent = pair.fast
    hit = request("/v1/app/plain")
    await exchange(agent, one("warm", hit))
    before = await answered(agent)
    reply = await exchange(agent, Case("sequence", [Step([hit]), Step([request("/v1/app/json")]), Step([hit])]))
    assert [r[0] for r in reply[:3]] == [200, 200, 200]
    assert await answered(agent) == before + 1


async def test_repeated_request_on_one_connection_is_answered_each_time(pair: Pair, secrets: Secrets) -> None:
    """The same bytes sent again on a connection (parsed once, remembered) get the hot path's full answer each time."""
    agent = pair.fast
    hit = request("/v1/app/plain")
    await exchange(agent, one("warm", hit))
    before = await answered(agent)
    *replies, state = await exchange(agent, Case("repeated", [Step([hit]), Step([hit]), Step([hit])]))
    assert [r[0] for r in replies] == [200, 200, 200] and state == ("open",)
    assert replies[0][2] == replies[1][2] == replies[2][2]
    assert await answered(agent) == before + 3


class KeptConnection:
    """One keep-alive TCP connection to an agent, answering one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._collected = ResponseReader()

    @classmethod
    @asynccontextmanager
    async def to(cls, agent: AgentHandle) -> AsyncIterator[KeptConnection]:
        reader, writer = await asyncio.open_connection(*agent.started.tcp)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def send(self, data: bytes) -> Response:
        want = len(self._collected.done) + 1
        self._writer.write(data)
        await self._writer.drain()
        while len(self._collected.done) < want:
            chunk = await asyncio.wait_for(self._reader.read(65536), STEP_TIMEOUT)
            assert chunk, "the agent closed the connection"
            self._collected.parser.feed_data(chunk)
        return self._collected.done[-1]


async def test_repeated_bytes_after_token_rotation_are_refused(pair: Pair, secrets: Secrets, tmp_path: Path) -> None:
    """The same bytes on one connection after a token rotation (SIGHUP's reload) are refused: identity is re-decided."""
    agent = pair.fast
    read = request("/v1/app/plain", token=READER)
    await exchange(agent, one("warm", read))
    async with KeptConnection.to(agent) as conn:
        before = await answered(agent)
        assert (await conn.send(read)).status == 200
        assert await answered(agent) == before + 1  # the hot path's answer, so the next one takes its shortcut
        write_token(tmp_path / "reader", "rotated-" + "e5" * 12)
        agent.started.components.auth.reload()
        refused = await conn.send(read)
        assert refused.status == 403 and b"plain-value" not in refused.body


async def test_repeated_bytes_after_a_token_file_changes_are_refused(
    pair: Pair, secrets: Secrets, tmp_path: Path
) -> None:
    """Without SIGHUP, the token file's own check (once a second) ends a kept connection's shortcut too."""
    agent = pair.fast
    read = request("/v1/app/plain", token=READER)
    await exchange(agent, one("warm", read))
    async with KeptConnection.to(agent) as conn:
        before = await answered(agent)
        assert (await conn.send(read)).status == 200
        assert await answered(agent) == before + 1
        write_token(tmp_path / "reader", "rotated-" + "f6" * 12)
        statuses = []
        for _ in range(100):  # the file is looked at within a second or so; the same bytes, again and again
            reply = await conn.send(read)
            statuses.append(reply.status)
            if reply.status != 200:
                break
            await asyncio.sleep(0.05)
        assert statuses[-1] == 403, statuses
        assert set(statuses[:-1]) <= {200}


async def test_repeated_bytes_after_a_rotation_get_the_new_value(pair: Pair, secrets: Secrets, sm: Any) -> None:
    """A kept connection's repeated read serves the new version once the cache holds it (the entry is re-decided)."""
    agent = pair.fast
    read = request("/v1/app/plain")
    await exchange(agent, one("warm", read))
    async with KeptConnection.to(agent) as conn:
        first = await conn.send(read)
        assert json.loads(first.body)["SecretString"] == "plain-value"
        sm.put_secret_value(SecretId="app/plain", SecretString="plain-rotated")
        refreshed = await agent.get("/v1/app/plain?refreshNow=true")  # another connection: the cache takes it
        assert refreshed.status == 200 and refreshed.json()["SecretString"] == "plain-rotated"
        before = await answered(agent)
        again = await conn.send(read)
        assert again.status == 200 and json.loads(again.body)["SecretString"] == "plain-rotated"
        assert await answered(agent) == before + 1  # still the hot path's, decided again from the new entry


async def test_reads_alternating_on_one_connection_each_get_their_own_value(pair: Pair, secrets: Secrets) -> None:
    """Two secrets read in turn on one connection (each remembered by its bytes) each get their own value."""
    agent = pair.fast
    plain, other = request("/v1/app/plain"), request("/v1/shared/x")
    await exchange(agent, one("warm", plain))
    await exchange(agent, one("warm", other))
    async with KeptConnection.to(agent) as conn:
        before = await answered(agent)
        bodies = [json.loads((await conn.send(data)).body)["SecretString"] for data in (plain, other) * 3]
        assert bodies == ["plain-value", "shared-value"] * 3
        assert await answered(agent) == before + 6


async def test_a_kept_connection_holds_no_evicted_value(moto: MotoServer, short_tmp: Path, secrets: Secrets) -> None:
    """A value the cache evicted is freed though a connection that once read it is still in use (tickets keep none)."""
    async with serve_agent(
        moto.url, short_tmp, cache__max_entries=1, cache__ttl_seconds=3600, refresh__mode="ttl"
    ) as agent:
        read = request("/v1/app/plain")
        assert (await agent.get("/v1/app/plain")).status == 200  # cached
        async with KeptConnection.to(agent) as conn:
            before = await answered(agent)
            assert (await conn.send(read)).status == 200
            assert await answered(agent) == before + 1  # the hot path's: the connection has a ticket for it
            entry = await agent.started.components.cache.peek("app/plain", CURRENT)
            assert entry is not None
            held = weakref.ref(entry.value)
            del entry
            assert (await agent.get("/v1/shared/x")).status == 200  # one entry at most: app/plain is evicted
            assert (await conn.send(request("/ping", token=None))).status == 200  # the connection lives on
            gc.collect()
            assert held() is None
