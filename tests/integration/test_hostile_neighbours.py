"""A local process without a token cannot lock apps out, and malformed input gets a clean answer.

Connections here are raw sockets, so the tests control exactly which bytes go
out and when. Every wait is bounded; the bounds are far below what the agent
used to take (keep-alive 75 s, a body never sent held forever) and far above
the configured timeouts, so they pin behaviour, not speed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.dev.emulator import MotoServer
from tests.support.agent import TOKEN, AgentFactory, AgentHandle

BOUND = 20.0  # seconds any single wait may take here (a hang guard): the timeouts under test are 1 s, the idle one 60 s


async def raw(agent: AgentHandle, *, unix: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if unix:
        assert agent.started.unix_socket is not None
        return await asyncio.open_unix_connection(agent.started.unix_socket)
    host, port = agent.started.tcp
    return await asyncio.open_connection(host, port)


async def closed_by_agent(reader: asyncio.StreamReader) -> bytes:
    """Everything the agent sends until it closes the connection (bounded)."""
    return await asyncio.wait_for(reader.read(-1), BOUND)


async def exchange(agent: AgentHandle, request: bytes, *, unix: bool = False) -> bytes:
    reader, writer = await raw(agent, unix=unix)
    writer.write(request)
    await writer.drain()
    try:
        return await closed_by_agent(reader)
    finally:
        writer.close()


TIMEOUTS = {
    "server__idle_timeout_seconds": 1,
    "server__header_timeout_seconds": 1,
    "server__body_timeout_seconds": 1,
}


async def test_idle_connections_are_closed(moto: MotoServer, run_agent: AgentFactory) -> None:
    """A connection that sends nothing is closed after idle_timeout_seconds."""
    async with run_agent(moto.url, **TIMEOUTS) as agent:
        reader, writer = await raw(agent)
        try:
            assert await closed_by_agent(reader) == b""
        finally:
            writer.close()


async def test_trickling_headers_are_cut_off(moto: MotoServer, run_agent: AgentFactory) -> None:
    """A request whose headers trickle in a byte at a time is closed after header_timeout, long before idle."""
    async with run_agent(moto.url, **{**TIMEOUTS, "server__idle_timeout_seconds": 60}) as agent:
        reader, writer = await raw(agent)
        try:
            writer.write(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")

            async def trickle() -> None:
                while True:  # a byte now and then: the request never completes
                    await asyncio.sleep(0.3)
                    writer.write(b"a")

            dripping = asyncio.create_task(trickle())
            try:
                assert await closed_by_agent(reader) == b""
            finally:
                dripping.cancel()
            assert agent.started.components.connections.closed_for_timeout == 1
        finally:
            writer.close()


async def test_a_body_that_never_arrives_is_answered_408(moto: MotoServer, run_agent: AgentFactory) -> None:
    """A request that declares a body and never sends it gets 408 and its connection is closed."""
    async with run_agent(moto.url, **TIMEOUTS) as agent:
        answer = await exchange(
            agent,
            b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: secretsmanager.GetSecretValue\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n{",
        )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"RequestTimeoutException" in answer


async def test_unix_peers_are_capped_per_uid(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """On the socket one uid holding its cap of idle connections gets 429 for more; health is still answered."""
    sm.create_secret(Name="uid/s", SecretString="v")
    async with run_agent(moto.url, server__unix_max_connections_per_uid=2) as agent:
        held = [await raw(agent, unix=True) for _ in range(2)]
        try:
            token_header = f"X-Aws-Parameters-Secrets-Token: {TOKEN}\r\n".encode()
            refused = await exchange(
                agent, b"GET /v1/uid/s HTTP/1.1\r\nHost: localhost\r\n" + token_header + b"\r\n", unix=True
            )
            assert refused.startswith(b"HTTP/1.1 429") and b"TooManyConnectionsException" in refused
            ping = await exchange(agent, b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n", unix=True)
            assert ping.startswith(b"HTTP/1.1 200") and ping.endswith(b"healthy")
            assert (await agent.get("/v1/uid/s")).status == 200  # TCP has its own budget
        finally:
            for _reader, writer in held:
                writer.close()


async def test_parser_errors_are_json_and_echo_nothing(moto: MotoServer, run_agent: AgentFactory) -> None:
    """A malformed request (a folded token header) gets 400 in the JSON error shape, quoting none of its bytes."""
    fragment = b"folded-token-fragment-" + TOKEN[-12:].encode()
    async with run_agent(moto.url) as agent:
        answer = await exchange(
            agent,
            b"GET /v1/x HTTP/1.1\r\nHost: localhost\r\nX-Aws-Parameters-Secrets-Token: abc\r\n "
            + fragment
            + b"\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.0 400"), answer[:200]
    assert b"application/json" in answer and b'"__type": "InvalidRequestException"' in answer
    assert fragment not in answer and b"abc" not in answer.split(b"\r\n\r\n", 1)[1]


async def test_host_must_be_loopback_on_tcp(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """A DNS-rebinding Host is refused on TCP unless listed in server.allowed_hosts; the socket accepts any."""
    sm.create_secret(Name="host/s", SecretString="v")
    async with run_agent(moto.url, server__allowed_hosts=["agent.internal"]) as agent:
        port = agent.started.tcp[1]
        for host, status in (
            ("evil.example", 400),
            (f"evil.example:{port}", 400),
            (f"localhost:{port}", 200),
            (f"127.0.0.1:{port}", 200),
            (f"[::1]:{port}", 200),
            ("agent.internal", 200),
        ):
            reply = await agent.get("/v1/host/s", headers={"Host": host})
            assert reply.status == status, host
        rebinding = await agent.get("/v1/host/s", headers={"Host": "evil.example"})
        assert rebinding.json()["__type"] == "InvalidParameterException" and "evil" not in rebinding.text
        assert (await agent.get("/v1/host/s", headers={"Host": "evil.example"}, unix=True)).status == 200


async def test_absolute_form_and_http09_are_refused(moto: MotoServer, run_agent: AgentFactory) -> None:
    """Proxy-style absolute targets and HTTP/0.9 requests get 400, never a secret."""
    async with run_agent(moto.url) as agent:
        token_header = f"X-Aws-Parameters-Secrets-Token: {TOKEN}\r\n".encode()
        absolute = await exchange(
            agent,
            b"GET http://127.0.0.1/ping HTTP/1.1\r\nHost: localhost\r\n" + token_header + b"Connection: close\r\n\r\n",
        )
        assert b" 400 " in absolute.split(b"\r\n", 1)[0], absolute[:200]
        http09 = await exchange(agent, b"GET /ping\r\n")
        assert b" 200 " not in http09 and b"healthy" not in http09, http09[:200]  # refused (400, or closed)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second uid")
async def test_one_uid_cannot_lock_other_uids_out_of_the_socket(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, short_tmp: Path
) -> None:
    """One uid holding far more socket connections than its cap neither fills the socket's budget nor keeps them."""
    sm.create_secret(Name="fair/s", SecretString="for-everyone")
    short_tmp.chmod(0o755)  # let the second uid reach the socket
    async with run_agent(
        moto.url,
        server__unix_socket_mode=0o666,
        server__unix_max_connections=4,
        server__unix_max_connections_per_uid=2,
        **TIMEOUTS,
    ) as agent:
        held = [await raw(agent, unix=True) for _ in range(6)]  # 2 within the cap, 4 over it
        try:
            other_uid = await asyncio.to_thread(read_as_uid, 65534, str(agent.started.unix_socket), "/value/fair/s")
            assert other_uid.startswith("HTTP/1.1 200") and other_uid.endswith("for-everyone"), other_uid[:200]
            over_cap = [reader for reader, _writer in held[2:]]
            for reader in over_cap:  # idle over-cap connections go after header_timeout, not idle_timeout
                assert await closed_by_agent(reader) == b""
        finally:
            for _reader, writer in held:
                writer.close()


def read_as_uid(uid: int, socket_path: str, path: str) -> str:
    """GET ``path`` over the socket from a forked child running as ``uid``; the raw answer."""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Aws-Parameters-Secrets-Token: {TOKEN}\r\n"
    request += "Connection: close\r\n\r\n"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid, ask, hand the answer back through the pipe, exit at once
        try:
            os.close(read_end)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(BOUND)
                sock.connect(socket_path)
                sock.sendall(request.encode())
                while chunk := sock.recv(65536):
                    os.write(write_end, chunk)
        except BaseException as exc:  # reported to the parent as the answer
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = b""
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer.decode(errors="replace")


async def test_a_wrong_token_loop_does_not_flood_the_log(moto: MotoServer, run_agent: AgentFactory) -> None:
    """A caller looping on a wrong token gets 403 every time; the log gets a few lines, one warning, then a count."""
    with capture_logs() as logs:
        async with run_agent(moto.url, log__request_lines_per_interval=5, log__summary_interval_seconds=3600) as agent:
            statuses = [(await agent.get("/v1/app/db", token="wrong-" + "0" * 20)).status for _ in range(40)]
    assert set(statuses) == {403}
    refused = [e for e in logs if e["event"] == "request" and e.get("status") == 403 and e["log_level"] == "info"]
    assert len(refused) == 5
    assert [e["limit"] for e in logs if e["event"] == "request_lines_suppressed"] == [5]
    # The summary at shutdown counts the rest.
    (summary,) = [e for e in logs if e["event"] == "requests_summary"]
    assert summary["suppressed"] == 35


FOLDED = b"GET /v1/x HTTP/1.1\r\nHost: localhost\r\nX-Aws-Parameters-Secrets-Token: abc\r\n folded\r\n\r\n"


async def test_a_garbage_loop_does_not_flood_the_log(moto: MotoServer, run_agent: AgentFactory) -> None:
    """Malformed requests in a loop get 400 each; their malformed_request lines are capped the same way."""
    with capture_logs() as logs:
        async with run_agent(moto.url, log__request_lines_per_interval=3, log__summary_interval_seconds=3600) as agent:
            answers = [await exchange(agent, FOLDED) for _ in range(12)]
    assert all(b" 400 " in answer.split(b"\r\n", 1)[0] for answer in answers), answers[0][:200]
    malformed = [e["log_level"] for e in logs if e["event"] == "malformed_request"]
    assert malformed == ["info"] * 3 + ["debug"] * 9  # past the cap, at debug like request lines
    assert [e["route"] for e in logs if e["event"] == "request_lines_suppressed"] == ["malformed"]
    (summary,) = [e for e in logs if e["event"] == "requests_summary"]
    assert summary["suppressed"] == 9
