"""services/center/console: the admin console's files, served with a strict CSP and no
caching; the page builds no HTML from data and names only elements it has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp

from services.center import console
from services.center.api import AdminApi, CenterApi
from services.center.app import web_app
from services.center.config import CenterConfig
from services.kit import http

FOLDER = Path(console.__file__).parent
NONE: Any = None


async def test_the_console_is_served_with_a_strict_policy() -> None:
    config = CenterConfig()
    api = CenterApi(config, NONE, NONE, NONE, topics=NONE, broadcasts=NONE)
    app = web_app(config, api, AdminApi(NONE, NONE, NONE, api, NONE))
    runner, port = await http.start_site(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/admin", allow_redirects=False) as resp:
                assert resp.status == 308 and resp.headers["Location"] == "/admin/"
            for path, kind in [("/admin/", "text/html"), ("/admin/console.js", "text/javascript"),
                               ("/admin/console.css", "text/css")]:
                async with session.get(base + path) as resp:
                    body = await resp.read()
                    assert resp.status == 200 and resp.content_type == kind
                    assert body == (FOLDER / (path.rsplit("/", 1)[1] or "index.html")).read_bytes()
                    csp = resp.headers["Content-Security-Policy"]
                    assert "default-src 'none'" in csp and "script-src 'self'" in csp
                    assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
                    assert resp.headers["Cache-Control"] == "no-store"
                    assert resp.headers["X-Content-Type-Options"] == "nosniff"
            async with session.get(f"{base}/admin/../cluster-secret") as resp:
                assert resp.status == 404
            async with session.get(f"{base}/admin/app.py") as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == 1006
    finally:
        await runner.cleanup()


def test_the_page_has_no_inline_code_and_builds_no_html_from_data() -> None:
    page = (FOLDER / "index.html").read_text()
    script = (FOLDER / "console.js").read_text()
    assert "<script>" not in page and not re.search(r"\son\w+\s*=", page, re.I)  # onclick=
    assert "style=" not in page
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "localStorage"):
        assert sink not in script, sink
    ids = set(re.findall(r'\$\("([\w-]+)"\)', script))
    missing = {i for i in ids if f'id="{i}"' not in page}
    assert not missing, f"the script names elements the page lacks: {missing}"
