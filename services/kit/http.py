"""aiohttp plumbing shared by the HTTP services: the JSON error layer, bodies, site start-up.

Every answer that is not a success is `{"error": {"code": <int>, "message": "<text>"}}`
(docs/api.md §3):

    PushwireError raised by a handler -> STATUS by class (walking the MRO), the error's code;
                                         the message only when the status is 4xx, else a
                                         generic text per class (the original goes to the log)
    aiohttp's HTTPException           -> its status with a documented code (404 unknown route
                                         1006, 405 1003 plus `Allow`, 413 1005, ...)
    anything else                     -> 500, code 1000, "internal error" (logged with traceback)
    a request aiohttp cannot parse    -> its 4xx status, code 1003, a fixed text (no echo)

So an internal address or exception text in an error raised from an internal call (a gRPC
error carries its target) can reach a log, never a response body.

Around it, every request's log lines carry the app and uid its path names
(services/kit/logs.py `context`), and with `access_log` one line per request is written to
`pushwire.access`: method, path (never the query string, where a caller may have put a
credential), status, duration, client address; never a header.

Outside that layer, when configured: the client's address from trusted reverse proxies'
`Forwarded` / `X-Forwarded-For` (services/kit/forwarded.py) becomes `request.remote`, and
browsers' cross-origin requests are answered (services/kit/cors.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

from pushwire_protocol.errors import (
    AuthError,
    BadRequest,
    Conflict,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    PushwireError,
    StoreError,
    TooLarge,
    Unavailable,
)
from services.kit import logs, metrics
from services.kit.cors import Cors
from services.kit.forwarded import client_address, forwarded_hops, x_forwarded_for_hops
from services.kit.networks import NO_PROXIES, TrustedProxies
from services.kit.schema import Schema, decode_json

log = logging.getLogger("pushwire.http")
access_log = logging.getLogger("pushwire.access")
CLIENT_GONE = 499           # the access log's status of a request whose client left first (nginx's)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Status by error class; a subclass without an entry takes its nearest ancestor's (a quota
# error under LimitError answers 429). PushwireError itself and ConfigError: 500.
STATUS: dict[type[PushwireError], int] = {
    BadRequest: 400, ProtocolError: 400, AuthError: 401, NotFound: 404, Conflict: 409,
    TooLarge: 413,
    LimitError: 429, Unavailable: 503, StoreError: 503, PushwireError: 500,
}
# What a 5xx says instead of the error's own message.
PUBLIC_5XX: dict[type[PushwireError], str] = {
    Overloaded: "overloaded, retry later",
    Unavailable: "temporarily unavailable, retry later",
    StoreError: "storage temporarily unavailable, retry later",
    PushwireError: "internal error",
}
RETRY_AFTER_S = 1           # on every 503: clients back off at least this long
# aiohttp's own refusals: status -> (code, message)
FRAMEWORK: dict[int, tuple[int, str]] = {
    404: (NotFound.code, "no such route"),
    405: (BadRequest.code, "method not allowed"),
    408: (BadRequest.code, "request body not received in time"),
    413: (TooLarge.code, "request body too large"),
    414: (BadRequest.code, "request line too long"),
    415: (BadRequest.code, "send JSON: Content-Type application/json, no Content-Encoding"),
    431: (BadRequest.code, "request headers too large"),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may send (client_max_size of the app enforces `max_body`)."""

    max_body: int = 1024 * 1024         # bytes of a request body (more: 413)
    read_timeout_s: float = 10.0        # to receive the whole body once the handler asks (408)


LIMITS: web.AppKey[Limits] = web.AppKey("pushwire_limits", Limits)
PROXIES: web.AppKey[TrustedProxies] = web.AppKey("pushwire_proxies", TrustedProxies)


class ErrorLog:
    """The error answers a server gave lately (newest first, at most `size`) and how many of
    each (status, message) since it started (at most `kinds` of them; later ones count as
    "other"): center's admin console shows them (docs/console.md)."""

    def __init__(self, size: int = 100, kinds: int = 200) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=size)
        self.counts: dict[tuple[int, str], int] = {}
        self._kinds = kinds

    def add(self, request: web.Request, status: int, code: int, message: str) -> None:
        self.recent.appendleft({"at_ms": int(time.time() * 1000), "method": request.method,
                                "path": request.path[:200], "status": status, "code": code,
                                "message": message})
        key = (status, message) if (status, message) in self.counts \
            or len(self.counts) < self._kinds else (status, "other")
        self.counts[key] = self.counts.get(key, 0) + 1


ERROR_LOG: web.AppKey[ErrorLog] = web.AppKey("pushwire_error_log", ErrorLog)


def _nearest(table: Mapping[type[PushwireError], Any], exc: PushwireError) -> Any:
    return next(table[c] for c in type(exc).__mro__ if c in table)


def status_of(exc: PushwireError) -> int:
    """The HTTP status of one of our errors (STATUS, by class)."""
    return int(_nearest(STATUS, exc))


def public_message(exc: PushwireError, status: int) -> str:
    """The text a caller may see: the error's own for 4xx, a generic one for 5xx."""
    return exc.message if status < 500 else str(_nearest(PUBLIC_5XX, exc))


def error_response(code: int, message: str, status: int,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """The documented error body with `status` (and the headers that status calls for)."""
    extra = dict(headers or {})
    if status == 401:
        extra["WWW-Authenticate"] = 'Bearer realm="pushwire"'       # RFC 6750 §3
    if status == 503:
        extra["Retry-After"] = str(RETRY_AFTER_S)
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=extra)


def _framework_error(exc: web.HTTPException) -> web.Response:
    code, message = FRAMEWORK.get(exc.status, (BadRequest.code, "bad request")) \
        if exc.status < 500 else (PushwireError.code, "internal error")
    allow = exc.headers.get("Allow")
    response = error_response(code, message, exc.status, {"Allow": allow} if allow else None)
    if exc.status == 408:
        response.force_close()          # the rest of the body may still be on its way
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an HTTP status with the JSON error body; internals go to the log
    (and, where the app keeps one, the answer to its ErrorLog)."""
    response = await _answer(request, handler)
    errors = request.app.get(ERROR_LOG)
    if errors is not None and response.status >= 400 and isinstance(response, web.Response) \
            and response.content_type == "application/json" and response.body is not None:
        error = json.loads(bytes(response.body))      # type: ignore[arg-type]
        if isinstance(error, dict) and isinstance(error.get("error"), dict):
            errors.add(request, response.status, error["error"]["code"],
                       error["error"]["message"])
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PushwireError as exc:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s from %s -> %d: %s: %s %s", request.method, request.path,
                        request.remote, status, type(exc).__name__, exc.message, exc.detail)
        return error_response(exc.code, public_message(exc, status), status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _framework_error(exc)
    except Exception:
        log.exception("%s %s from %s failed", request.method, request.path, request.remote)
        return error_response(PushwireError.code, "internal error", 500)


_JSON_TYPE = re.compile(r"application/([\w.+-]+\+)?json", re.ASCII)


async def json_body(request: web.Request, schema: Schema) -> dict[str, Any]:
    """The request's JSON object body checked by `schema`: 415 for a non-JSON content type or
    any content coding (bodies are never inflated: no zip bombs), 413 over the size bound, 408
    when it does not arrive within the read timeout, 400 for a body that is not one UTF-8
    JSON object or does not fit the schema."""
    return schema.parse(await json_object(request))


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, with every check of `json_body` but the schema's (for
    a caller whose fields are checked by the domain)."""
    ctype = request.headers.get("Content-Type")
    if ctype is not None and ctype != "application/json" and (  # the usual one: no parse
            not _JSON_TYPE.fullmatch(request.content_type)
                              or (request.charset or "utf-8").lower() not in ("utf-8", "utf8")):
        raise web.HTTPUnsupportedMediaType()
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise web.HTTPUnsupportedMediaType()
    limits = request.app.get(LIMITS, Limits())
    if (request.content_length or 0) > limits.max_body:       # refused before it is sent
        raise web.HTTPRequestEntityTooLarge(limits.max_body, request.content_length or 0)
    if not request.body_exists:
        return decode_json(b"")
    if request.content.is_eof():        # it came with the headers (most do): nothing to wait for
        return decode_json(await request.read())
    try:
        async with asyncio.timeout(limits.read_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None
    return decode_json(raw)


def bearer_matches(request: web.Request, keys: Iterable[str]) -> bool:
    """Whether `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1)
    names one of `keys`, compared in constant time as bytes (any text, even non-ASCII)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    given = _raw(token.strip())
    return scheme.lower() == "bearer" and bool(given) and any(
        hmac.compare_digest(given, _raw(k)) for k in keys)


def _raw(text: str) -> bytes:
    # surrogatepass: header bytes that are not UTF-8 arrive as surrogates (surrogateescape)
    return text.encode("utf-8", "surrogatepass")


def forwarded_middleware(proxies: TrustedProxies) -> Middleware:
    """Make `request.remote` the client a trusted proxy names (services/kit/forwarded.py)
    for everything inside: handlers, per-address decisions, logs."""

    @web.middleware
    async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        if proxies.trusts(peer):
            if "Forwarded" in request.headers:
                hops = forwarded_hops(element.get("for") for element in request.forwarded)
            else:
                hops = x_forwarded_for_hops(request.headers.getall("X-Forwarded-For", ()))
            request = request.clone(remote=client_address(peer, hops, proxies))
        return await handler(request)

    return real_client


def access_middleware(log_requests: bool) -> Middleware:
    """Bind the app and uid of the request path to every log line of the request; with
    `log_requests`, write its access line once the answer is known."""

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500                    # an exception that escapes every layer
        path = request.match_info
        with logs.context(app=path.get("app"), uid=path.get("uid")):
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = CLIENT_GONE
                raise
            finally:
                if log_requests:
                    _access_line(request, status, (time.perf_counter() - started) * 1000)

    return access


def _access_line(request: web.Request, status: int, duration_ms: float) -> None:
    remote = request.remote or "-"
    access_log.info("%s %s %d %.1fms from %s", request.method, request.path, status,
                    duration_ms, remote,
                    extra={"method": request.method, "path": request.path, "status": status,
                           "duration_ms": round(duration_ms, 3), "remote": remote})


def cors_middleware(cors: Cors) -> Middleware:
    """Answer browsers' preflights and mark allowed origins' answers (services/kit/cors.py);
    outside the JSON error layer, so errors carry the CORS headers too."""

    @web.middleware
    async def cross_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method == "OPTIONS" and wanted is not None:
            return await _preflight(cors, request, handler, origin, wanted)
        response = await handler(request)
        if cors.allows(origin):
            response.headers.update(cors.headers(origin))
        return response

    return cross_origin


async def _preflight(cors: Cors, request: web.Request, handler: Handler, origin: str,
                     wanted: str) -> web.StreamResponse:
    refused = request.match_info.http_exception
    if not isinstance(refused, web.HTTPMethodNotAllowed):
        return await handler(request)           # no such route: its 404
    headers = cors.preflight(origin, wanted, set(refused.allowed_methods))
    if headers is None:
        return error_response(BadRequest.code, "cross-origin request not allowed", 403)
    return web.Response(status=204, headers=headers)


def application(limits: Limits = Limits(), *, proxies: TrustedProxies = NO_PROXIES,
                cors: Cors | None = None, access_log: bool = False) -> web.Application:
    """An aiohttp app with the JSON error layer, the request limits and /metrics; the client
    address from `proxies`' forwarded headers, browsers' cross-origin requests answered by
    `cors` (None: no CORS header, OPTIONS answers 405), an access line per request with
    `access_log`."""
    edge = [forwarded_middleware(proxies)] if proxies else []
    edge.append(access_middleware(access_log))
    if cors is not None:
        edge.append(cors_middleware(cors))
    app = web.Application(middlewares=[*edge, metrics.responses_middleware, errors_middleware],
                          client_max_size=limits.max_body)
    app[LIMITS] = limits
    app[PROXIES] = proxies
    metrics.add_route(app)
    return app


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering a request it cannot parse (a request line or
    header over 8190 bytes, a bad method token, broken chunking) with the JSON error body
    instead of a text page that echoes the parser's exception."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        log.debug("unparsable request from %s: %d %r", request.remote, status, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        code, text = FRAMEWORK.get(status, (BadRequest.code, "malformed HTTP request")) \
            if status < 500 else (PushwireError.code, "internal error")
        response = error_response(code, text, status)
        response.force_close()
        return response


# What serves a new connection first (services/kit/front.py): given the server and a maker of
# aiohttp's handler, to which it hands the connection over.
Front = Callable[[web.Server, Callable[[], RequestHandler]], asyncio.Protocol]


class _Server(web.Server):
    front: Front | None = None

    def __call__(self) -> Any:
        if self.front is not None:
            return self.front(self, self.handler)
        return self.handler()

    def handler(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    front: Front | None = None

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server          # same state, one method more: see _JsonErrorHandler
        cast(_Server, server).front = self.front
        return server


async def start_site(app: web.Application, host: str, port: int,
                     ssl_context: SSLContext | None = None,
                     front: Front | None = None) -> tuple[web.AppRunner, int]:
    """Serve `app` (over https with `ssl_context`, services/kit/tls.py), each connection
    first by `front` when given; return the runner (clean up to stop) and the bound port."""
    runner = _Runner(app, access_log=None, handle_signals=False, auto_decompress=False)
    runner.front = front
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or ()
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
