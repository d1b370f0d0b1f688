"""aiohttp plumbing shared by the HTTP services: JSON errors, site start-up, metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.kit import metrics
from services.kit.errors import BadRequest, PushwireError

log = logging.getLogger("pushwire.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: int, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an HTTP status with a JSON body; internals go to the log."""
    try:
        return await handler(request)
    except PushwireError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s -> %s: %s %s", request.method, request.path, exc.http_status,
                        exc.message, exc.detail)
        return error_body(exc.code, exc.message, exc.http_status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_body(0, exc.reason, exc.status)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_body(PushwireError.code, "internal error", 500)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or BadRequest."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("body must be JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def application(**kwargs: Any) -> web.Application:
    """An aiohttp app with the JSON error middleware and /metrics."""
    app = web.Application(middlewares=[errors_middleware], **kwargs)
    metrics.add_route(app)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; return the runner (clean up to stop) and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or ()
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
