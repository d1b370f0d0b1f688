"""A business backend for integration tests: a real aiohttp server that receives pushwire's
webhooks (upstream and status), verifies their signatures with the `standardwebhooks` package
(as a business would, docs/coordinator.md §1) and records what came.

    async with Business() as business:
        app = AppConfig(..., webhook_secrets=(business.secret,),
                        webhooks={"chat": business.url("/up")})
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from cli.processes import free_port

WEBHOOK_SECRET = "whsec_dGhlIGJ1c2luZXNzIG9mIHRoZSBpbnRlZ3JhdGlvbiB0ZXN0cw=="


@dataclass
class Hit:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    raw: bytes = b""          # the body as it came on the wire


@dataclass
class Business:
    secret: str = WEBHOOK_SECRET           # the webhook secret it verifies with
    status: int = 200                      # what every request is answered with
    statuses: dict[str, int] = field(default_factory=dict)   # per path, overrides `status`
    failing: dict[str, int] = field(default_factory=dict)    # path -> first N answered 503
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
        """The signature check a business does (docs/coordinator.md §1)."""
        try:
            Webhook(self.secret).verify(body, dict(headers))
        except WebhookVerificationError:
            return False
        return True

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not self.valid(request.headers, raw):
            self.bad_signatures += 1
        self.hits.append(Hit(request.path, json.loads(raw), dict(request.headers),
                             time.monotonic(), raw))
        status = self.statuses.get(request.path, self.status)
        if self.failing.get(request.path, 0) > 0:
            self.failing[request.path] -= 1
            status = 503
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
