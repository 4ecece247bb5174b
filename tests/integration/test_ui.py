"""The /ui page: public static files with strict headers behind the usual guards, and in a real browser."""

from __future__ import annotations

from agent.dev.emulator import MotoServer
from agent.server import ui
from tests.support.agent import TOKEN, AgentFactory

CSP = "default-src 'self'; frame-ancestors 'none'"


async def test_page_and_assets_are_public_with_strict_headers(moto: MotoServer, run_agent: AgentFactory) -> None:
    """/ui and each asset answer 200 without a token, with the CSP, nosniff, no CORS headers, no data."""
    async with run_agent(moto.url) as agent:
        for path, (_name, kind) in ui.ASSETS.items():
            reply = await agent.get(path, token=None, headers={"Origin": "http://evil.example"})
            assert reply.status == 200, path
            assert reply.headers["Content-Type"] == f"{kind}; charset=utf-8"
            assert reply.headers["Content-Security-Policy"] == CSP
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert not [name for name in reply.headers if name.lower().startswith("access-control-")]
            assert TOKEN not in reply.text
        with_token = await agent.get("/ui")
        assert with_token.status == 200 and TOKEN not in with_token.text


async def test_page_follows_the_guard_order(moto: MotoServer, run_agent: AgentFactory) -> None:
    """On /ui: X-Forwarded-For 400 before anything, a method other than GET 405; unknown /ui/ paths need the token."""
    async with run_agent(moto.url) as agent:
        xff = {"X-Forwarded-For": "10.0.0.1"}
        for path in ("/ui", "/ui/app.js"):
            assert (await agent.get(path, token=None, headers=xff)).status == 400
            assert (await agent.get(path, headers=xff, method="POST")).status == 400
            for method in ("POST", "PUT", "DELETE"):
                assert (await agent.get(path, token=None, method=method)).status == 405, (path, method)
        assert (await agent.get("/ui", token=None, headers={"Host": "evil.example"})).status == 400
        assert (await agent.get("/ui/secrets.json", token=None)).status == 403
        assert (await agent.get("/ui/secrets.json")).status == 404
