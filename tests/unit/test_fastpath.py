"""The hot path's pure pieces: response rendering and the query parser it answers with."""

from __future__ import annotations

import pytest

from agent.server import fastpath
from agent.server.fastpath import _GET_PARAMS, _query, render, render_hit


def test_hit_bytes_are_the_general_renderers(monkeypatch: pytest.MonkeyPatch) -> None:
    """render_hit's one-step bytes equal render()'s for a cache hit (status line, headers in order, body)."""
    monkeypatch.setattr(fastpath, "_date", lambda: b"Mon, 30 Nov 2026 23:56:30 GMT")
    body = b'{"ARN":"arn","Name":"app/db"}'
    expected = render(200, "application/json", body, "rid-1", (("X-Cache", "hit"), ("Age", "3")))
    assert render_hit(body, "rid-1", 3.9) == expected
    assert expected.startswith(b"HTTP/1.1 200 OK\r\nX-Cache: hit\r\nAge: 3\r\nContent-Type: application/json\r\n")
    assert expected.endswith(
        b"\r\nContent-Length: 29\r\nDate: Mon, 30 Nov 2026 23:56:30 GMT\r\nServer: "
        + fastpath.SERVER_SOFTWARE.encode()
        + b"\r\n\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("secretId=app/db", {"secretId": "app/db"}),
        ("secretId=app/db&versionStage=AWSPREVIOUS", {"secretId": "app/db", "versionStage": "AWSPREVIOUS"}),
        ("secretId=", {"secretId": ""}),
        ("secretId", None),  # no '=': aiohttp's reading of it decides
        ("secretId=a&", None),
        ("secretId=a=b", None),
        ("secretId=a&secretId=b", None),  # repeated: aiohttp refuses it
        ("colour=red", None),  # unknown: aiohttp refuses it
        ("roleArn=arn:aws:iam::1:role/r", None),  # roleArn reads are aiohttp's
    ],
)
def test_query_parser_declines_anything_but_plain_known_pairs(query: str, expected: dict[str, str] | None) -> None:
    """Plain name=value pairs with known names are parsed; anything else is left to aiohttp (None)."""
    assert _query(query, _GET_PARAMS) == expected
