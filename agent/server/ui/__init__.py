"""``GET /ui``: the rotation-timeline page, as static files shipped in the package.

The page is one HTML file, plain JavaScript modules and one stylesheet in this
directory (package data). It holds no data: the browser asks the user for a
token, keeps it in ``sessionStorage`` and fetches ``/status`` with it, so the
page and its assets are public like ``/ping`` (the guard still applies its
X-Forwarded-For, Host and method checks to them, in the usual order).

Every answer carries strict headers: a Content-Security-Policy allowing only
same-origin scripts, styles and connections (no inline script or style, no
framing), ``nosniff``, no referrer, and no CORS headers at all, so another
origin can neither embed the page nor read what it fetches.

The files are read once, when the app is built: serving them is a dict lookup.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# URL path → (file in this package, content type).
ASSETS: dict[str, tuple[str, str]] = {
    "/ui": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "text/javascript"),
    "/ui/timeline.js": ("timeline.js", "text/javascript"),
    "/ui/style.css": ("style.css", "text/css"),
    # Named by the page, so the browser never asks for /favicon.ico (a token-protected 403 and an auth failure).
    "/ui/icon.svg": ("icon.svg", "image/svg+xml"),
}
PATHS = frozenset(ASSETS)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers older than CSP's frame-ancestors
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: an upgraded agent's page is never mixed with old assets
}


def _load() -> dict[str, tuple[bytes, str]]:
    folder = resources.files(__name__)
    return {path: (folder.joinpath(name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}


def add_routes(app: web.Application) -> None:
    """Register ``/ui`` and its assets on ``app`` (route names ``ui`` and ``ui:<file>``)."""
    files = _load()

    async def serve(request: web.Request) -> web.Response:
        body, kind = files[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=HEADERS)

    app.router.add_get("/ui", serve, name="ui")
    for path in ASSETS:
        if path != "/ui":
            app.router.add_get(path, serve, name="ui:" + path.rsplit("/", 1)[1])
