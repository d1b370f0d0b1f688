"""A business backend for integration tests: a real aiohttp server that receives pushwire's
webhooks (upstream and status), checks their signatures and records what came.

    async with Business("app-secret") as business:
        app = AppConfig(..., webhooks={"chat": business.url("/up")})
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from cli.processes import free_port


@dataclass
class Hit:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class Business:
    secret: str
    status: int = 200                      # what every request is answered with
    statuses: dict[str, int] = field(default_factory=dict)   # per path, overrides `status`
    hits: list[Hit] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Business:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def valid(self, headers: Any, body: bytes) -> bool:
        """The pushwire signature check a business does (docs/coordinator.md §1)."""
        timestamp = headers.get("X-Pushwire-Timestamp", "")
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body,
                            hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        return fresh and hmac.compare_digest(expected, headers.get("X-Pushwire-Signature", ""))

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not self.valid(request.headers, raw):
            self.bad_signatures += 1
        self.hits.append(Hit(request.path, json.loads(raw), dict(request.headers),
                             time.monotonic()))
        status = self.statuses.get(request.path, self.status)
        return web.Response(status=status, text="no thanks" if status >= 400 else "ok")

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def events(self, path: str = "/status") -> list[dict[str, Any]]:
        """Status events in the order they arrived."""
        return [e for h in self.on(path) for e in h.body["events"]]

    async def wait(self, predicate: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"business: condition not met; got {len(self.hits)} hits")
            await asyncio.sleep(0.05)
