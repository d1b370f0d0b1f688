"""The admin web console (docs/console.md): three static files served at /admin/.

The page holds no secret and gets nothing from the server but these files; everything it
shows it fetches from the admin API (docs/api.md §4) with the admin key the operator typed,
kept in the tab's sessionStorage and sent as `Authorization: Bearer` (never in a URL or a
cookie, so another site cannot make the browser use it: no CSRF). The script builds the page
with textContent only (no HTML from data), and a strict Content-Security-Policy lets the page
load nothing but its own script and style and talk to nothing but this server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

FILES = {"index.html": "text/html", "console.js": "text/javascript",
         "console.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _page(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=HEADERS)
    return serve


async def _to_console(_request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/admin/", headers=HEADERS)


def routes() -> list[web.RouteDef]:
    """GET /admin (a redirect), /admin/ and the page's script and style, read once."""
    folder = resources.files(__package__)
    read = {name: (folder / name).read_bytes() for name in FILES}
    return [web.get("/admin", _to_console),
            web.get("/admin/", _page(read["index.html"], FILES["index.html"])),
            *(web.get(f"/admin/{name}", _page(read[name], FILES[name]))
              for name in FILES if name != "index.html")]
