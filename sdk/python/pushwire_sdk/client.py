"""Python client SDK: one persistent connection to a pushwire room, kept alive for you.

    async with PushClient("http://127.0.0.1:8000", "demo", "alice", token) as client:
        async for message in client.messages():
            handle(message)        # acknowledged when you ask for the next one

What it does (docs/protocol.md, DESIGN.md §2 "Connect"):
- asks the dispatcher for a route (`route.py`; cached per network type for the reply's
  TTL), tries its endpoints in order (the sticky room first, then the last room that worked,
  then the route's others) and sends AUTH; a background task owned by the client does this
  (plus one heartbeat task per connection and one task that sends gathered ACKs), and
  `close()` ends them all;
- on a dropped connection or a 4000-4099 close, reconnects with the route's backoff policy
  (`backoff.py`), reporting the endpoints that failed and the attempt number; follows
  RECONNECT instructions (their endpoints first, after their `after_ms`); offers the resume
  token of the last session (§8: a flash disconnect costs the room nothing); re-binds topics
  when the session was not resumed;
- sends HEARTBEAT at the negotiated interval and drops a link that stops answering;
- on a 4100-4199 close or a KICK, stops: `messages()` raises ClientClosed(code, reason);
  except 4101 (token expired) when a `renew_token` callback is given: it gets a new token
  and reconnects;
- drops copies of messages it already has (`seen.py`) and re-acknowledges copies of
  messages the application already took (their ACK was lost).

Acknowledgement: a unicast message is acknowledged after it was handed to the application,
when the consumer asks `messages()` for the next one. A consumer that leaves the loop after a
message calls `await client.ack(message)` for that last one (acking twice is harmless). A crash
while handling a message therefore means a redelivery, never a loss. ACKs gathered within a
few milliseconds leave as one packet (§6); `close()` sends what is still gathered.

Errors (all pushwire_protocol/errors.py): ClientClosed when the room says not to reconnect;
NotFound / BadRequest when the dispatcher rejects the app or the request; Unavailable when
`connect()` or a request (UP, BIND, UNBIND) times out or loses its connection. websockets and
aiohttp exceptions are translated here and in route.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from pushwire_protocol.errors import ProtocolError, PushwireError, Unavailable, from_code
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from pushwire_sdk import protocol, route, trust
from pushwire_sdk.backoff import Backoff
from pushwire_sdk.protocol import (
    Authed,
    Event,
    Failed,
    Kicked,
    Kind,
    Message,
    Moved,
    Pushed,
    Replied,
    UpReply,
)
from pushwire_sdk.seen import Seen, Stage

__all__ = ["ClientClosed", "Kind", "Message", "PushClient", "UpReply"]

log = logging.getLogger("pushwire.sdk")

CLOSE_TIMEOUT_S = 3.0          # closing handshake, then the socket is aborted
HEARTBEAT_REPLY_S = 10.0       # no answer to a HEARTBEAT within this: the link is dead (§5)
ACK_LINGER_S = 0.005           # ACKs gathered this long go out as one packet per app (§6)
ACK_MAX = 256                  # ids per ACK packet (a client message is at most 64 KiB)
MAX_MESSAGE = 16 * 1024 * 1024  # a BATCH of replayed messages can be large
FAILED_KEPT = 32               # endpoints remembered as failed (reported to the dispatcher)


class ClientClosed(PushwireError):
    """The room closed the connection with a "do not reconnect" code (4100-4199) or kicked the
    session. `close_code` says why (docs/protocol.md §7): a bad or expired token, a kick, a
    protocol violation, a limit. Reconnecting with the same settings would fail again."""

    fatal = True

    def __init__(self, close_code: int, reason: str = "") -> None:
        super().__init__(f"closed by the room with {close_code}" + (f": {reason}" if reason
                                                                      else ""))
        self.close_code = close_code
        self.reason = reason


@dataclass
class _Link:
    """One WebSocket connection and what the room said on it."""

    ws: ClientConnection
    endpoint: str
    authed: bool = False
    kicked: Kicked | None = None
    error: Failed | None = None
    last_rx: float = 0.0
    blocked: bool = False            # the reader waits for room in the client's queue
    deadline: asyncio.Timeout | None = None
    heartbeat: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Binding:
    token: str
    topics: tuple[str, ...] = ()


class PushClient:
    """A client of one (app, uid, device). Use `async with`, or `connect()` and `close()`."""

    def __init__(self, dispatcher_url: str, app: str, uid: str, token: str, device: str = "py",
                 net: str = "wifi", heartbeat_s: int = 0, *, broadcast_cursor: int = 0,
                 queue_size: int = 1000, dedupe_size: int = 10_000,
                 connect_timeout_s: float | None = 30.0, open_timeout_s: float = 10.0,
                 request_timeout_s: float = 10.0,
                 renew_token: Callable[[], Awaitable[str]] | None = None,
                 rand: Callable[[], float] = random.random, isp: str = "",
                 idc: str = "", cafile: str | None = None) -> None:
        """`token` is the JWT the app's backend signed for (app, uid[, device]) (docs/protocol.md
        §4.1): the client holds no key; a refusal's ClientClosed reason says what was wrong
        with it. `heartbeat_s` 0 lets the room choose (the app's default). `connect_timeout_s` None
        makes `connect()` wait until a session opens or the room refuses for good.
        `open_timeout_s` bounds each route request, WebSocket handshake and AUTH.
        `queue_size` bounds received messages not yet taken (a full queue stops reading: the
        room then sees a slow consumer). `dedupe_size` is how many message ids are
        remembered. `renew_token`, when given, is awaited for a fresh token after the room
        closed with 4101 (token expired); without it 4101 stops the client like 4100.
        `net` (wifi, cell, ...) keys the route cache (`network_changed`); `isp` and `idc` are
        passed to the dispatcher when known (docs/api.md §1.1). On https:// and wss:// the
        servers must have certificates from the CAs in `cafile`, or else from the system's CAs
        or the `pushwire dev --tls` CA (trust.py)."""
        self.dispatcher_url = dispatcher_url
        self.app, self.uid, self.token, self.device, self.net = app, uid, token, device, net
        self.isp, self.idc = isp, idc
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        self.open_timeout_s = open_timeout_s
        self.request_timeout_s = request_timeout_s
        self.renew_token = renew_token
        self.cafile = cafile
        self._tls: ssl.SSLContext | None = None       # made when first needed
        self.session: wire_pb2.AuthReply | None = None   # the open session; None while away
        self.resume_token = ""
        self.cursors: dict[str, int] = {app: broadcast_cursor}   # last broadcast id per app
        self._rand = rand
        self._queue: asyncio.Queue[Message] = asyncio.Queue(queue_size)
        self._seen = Seen(dedupe_size)
        self._wake = asyncio.Event()      # a message was queued, or the client stopped
        self._up = asyncio.Event()        # a session is open, or the client stopped
        self._ws: ClientConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failure: PushwireError | None = None
        self._pending: dict[int, asyncio.Future[Replied]] = {}
        self._seq = 0
        self._acks: dict[str, list[int]] = {}     # gathered for the next ACK packets
        self._acks_waiting = asyncio.Event()
        self._acker: asyncio.Task[None] | None = None
        self._routes: dict[str, tuple[route.Route, float]] = {}   # net -> (route, expiry)
        self._attempt = 0                     # connect rounds that failed in a row
        self._backoff = Backoff()
        self._failed: dict[str, None] = {}    # host:port, oldest first
        self._good = ""                       # the endpoint of the last open session
        self._moved: Moved | None = None
        self._binds: dict[str, _Binding] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> PushClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start the connection task and wait for the first session (`connect_timeout_s`).

        Raises ClientClosed / NotFound / BadRequest when the room or the dispatcher refuses
        for good, Unavailable when no session opened in time; the client is closed then.
        """
        if self._task is not None:
            raise RuntimeError("PushClient.connect() called twice")
        secure = self.dispatcher_url.startswith("https:")
        if self.cafile:
            self._trust()                 # a CA file that does not load: ConfigError now
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._trust()) if secure else None)
        self._task = asyncio.create_task(self._run(), name=f"pushwire-client:{self.uid}")
        self._acker = asyncio.create_task(self._ack_loop(), name=f"pushwire-acks:{self.uid}")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._link_up()
        except TimeoutError as exc:
            await self.close()
            raise Unavailable(f"no session within {self.connect_timeout_s}s") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Send the gathered ACKs, stop the tasks (closing the socket) and the HTTP session.
        Idempotent; `messages()` ends after the messages already queued."""
        self._stopped = True
        acker, self._acker = self._acker, None
        if acker is not None:
            acker.cancel()
            await asyncio.wait({acker})
            await self._flush_acks()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._wake.set()
        self._up.set()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def network_changed(self, net: str) -> None:
        """The device switched networks (e.g. "wifi" -> "cell"): use that network's cached
        route from now on, and drop the current link, which the switch usually killed without
        a FIN. The next connection resumes the session (docs/protocol.md §8)."""
        self.net = net
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # -- the application's side --------------------------------------------------------------

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Yield received messages, each once; ack each unicast one when the next is asked for.

        Ends after `close()`; raises ClientClosed (or the dispatcher's refusal) once the
        client stopped for good and the queue is drained.
        """
        while True:
            message = await self._next()
            if message is None:
                return
            self._hand(message)
            yield message
            await self.ack(message)

    async def ack(self, message: Message) -> None:
        """Acknowledge a unicast message (other kinds and repeated calls do nothing).

        The ACK leaves within ACK_LINGER_S together with the others gathered meanwhile, or at
        `close()`. Best effort: without a connection nothing is sent; the room redelivers the
        message later and the client acknowledges the copy without handing it out again.
        """
        key = (message.app, message.id)
        if message.kind is not Kind.UNICAST or self._seen.stage(key) is Stage.ACKED:
            return
        self._seen.advance(key, Stage.ACKED)
        self._gather_ack(message.app, message.id)

    async def send_up(self, app: str, type: str, body: bytes,
                      timeout_s: float | None = None) -> UpReply:
        """Send upstream data to the app's webhook for `type`; return the outcome.

        Waits for a session if there is none (within the timeout). Raises Unavailable on
        timeout or a lost connection, and the room's error for a rejected request.
        """
        reply = await self._request(Op.UP, Op.UP_REPLY,
                                    lambda seq: protocol.up(seq, app, type, body), timeout_s)
        return protocol.up_reply_of(reply.body)

    async def bind(self, app: str, token: str, topics: Sequence[str] = (),
                   cursor: int | None = None, timeout_s: float | None = None) -> list[str]:
        """Bind an app (with a token for it) and topics to this connection; return the topics
        the room confirmed. Bindings are restored after a reconnect. `cursor` is the last
        broadcast id seen for `app` (default: what this client saw)."""
        cursor = self.cursors.get(app, 0) if cursor is None else cursor
        reply = await self._request(Op.BIND, Op.BIND_REPLY,
                                    lambda seq: protocol.bind(seq, app, token, topics, cursor),
                                    timeout_s)
        bound = protocol.bind_reply_of(reply.body)
        known = self._binds.get(app, _Binding(token)).topics
        self._binds[app] = _Binding(token, tuple(dict.fromkeys([*known, *topics])))
        return bound

    async def unbind(self, app: str, topics: Sequence[str] = (),
                     timeout_s: float | None = None) -> list[str]:
        """Unbind topics of an app; none named: all of them, and the app is no longer bound
        again after a reconnect. Return the topics the room removed."""
        reply = await self._request(Op.UNBIND, Op.UNBIND_REPLY,
                                    lambda seq: protocol.unbind(seq, app, topics), timeout_s)
        binding = self._binds.pop(app, None)
        if binding is not None and topics:
            left = tuple(t for t in binding.topics if t not in set(topics))
            self._binds[app] = _Binding(binding.token, left)
        return protocol.bind_reply_of(reply.body)

    async def _next(self) -> Message | None:
        """The next queued message; None once closed; the failure once stopped for good."""
        if self._task is None and not self._stopped:
            raise RuntimeError("PushClient.messages() before connect()")
        while self._queue.empty():
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._queue.get_nowait()

    def _hand(self, message: Message) -> None:
        """Record that the application got `message` (its copies are re-acked from now on)."""
        if message.id:
            self._seen.advance((message.app, message.id), Stage.HANDED)
        if message.kind is Kind.BROADCAST:
            self.cursors[message.app] = max(self.cursors.get(message.app, 0), message.id)

    def _gather_ack(self, app: str, message_id: int) -> None:
        self._acks.setdefault(app, []).append(message_id)
        self._acks_waiting.set()

    async def _ack_loop(self) -> None:
        """Send the gathered ACKs a moment after the first one; runs until `close()`."""
        while True:
            await self._acks_waiting.wait()
            await asyncio.sleep(ACK_LINGER_S)
            self._acks_waiting.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        """Send every gathered ACK now (ACK_MAX ids per packet); dropped without a
        connection, since the room will redeliver those messages."""
        acks, self._acks = self._acks, {}
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            for app, ids in acks.items():
                for start in range(0, len(ids), ACK_MAX):
                    await ws.send(protocol.ack(app, ids[start:start + ACK_MAX]))

    async def _request(self, op: Op, reply_op: Op, build: Callable[[int], bytes],
                       timeout_s: float | None) -> Replied:
        """Send a request packet built for a fresh seq and wait for the reply with that seq."""
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                ws = await self._link_up()
                seq = self._next_seq()
                future: asyncio.Future[Replied] = asyncio.get_running_loop().create_future()
                self._pending[seq] = future
                try:
                    await ws.send(build(seq))
                    reply = await future
                finally:
                    self._pending.pop(seq, None)
        except TimeoutError as exc:
            raise Unavailable(f"no {reply_op.name} within {timeout}s") from exc
        except ConnectionClosed as exc:
            raise Unavailable(f"connection lost before {reply_op.name}") from exc
        if reply.op != reply_op:
            raise ProtocolError(f"{reply.op.name} answered {op.name}")
        return reply

    async def _link_up(self) -> ClientConnection:
        """The open connection, waiting for one; raises the failure once stopped for good."""
        while self._ws is None:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise Unavailable("the client is closed")
            await self._up.wait()
        return self._ws

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1     # u32, never 0 (0: not a request)
        return self._seq

    # -- the connection task -----------------------------------------------------------------

    async def _run(self) -> None:
        """Keep a session open until cancelled or refused for good (then record why)."""
        try:
            await self._keep_connected()
        except PushwireError as exc:
            log.warning("pushwire client %s/%s stops: %s", self.app, self.uid, exc.message)
            self._failure = exc
        except Exception as exc:    # a bug: stop loudly rather than hang the consumer
            log.exception("pushwire client %s/%s failed", self.app, self.uid)
            self._failure = PushwireError(f"client failed: {exc!r}")
            self._failure.__cause__ = exc
        finally:
            self._stopped = True
            self._wake.set()
            self._up.set()

    async def _keep_connected(self) -> None:
        while True:
            if await self._one_round():
                self._attempt = 0   # a session was open: the next failure starts afresh
            delay = self._delay(self._attempt)
            self._attempt += 1
            log.debug("pushwire client %s/%s reconnects in %.2fs", self.app, self.uid, delay)
            await asyncio.sleep(delay)

    async def _one_round(self) -> bool:
        """Try the candidate endpoints in order until one gives a session, and serve it.

        True when a session was open (and has ended); False when every endpoint failed.
        """
        for endpoint in await self._candidates():
            try:
                await self._session(endpoint)
            except Unavailable as exc:
                log.info("pushwire client %s/%s: %s", self.app, self.uid, exc.message)
                self._mark_failed(endpoint)
                continue
            except ClientClosed as exc:
                renew = self.renew_token
                if renew is None or protocol.ending(exc.close_code, renewable=True).decision \
                        is not protocol.Decision.RENEW_TOKEN:
                    raise
                log.info("pushwire client %s/%s: token expired, renewing", self.app, self.uid)
                self.token = await renew()
                return False
            return True
        self._routes.pop(self.net, None)    # ask the dispatcher again, now with failed=
        return False

    def _delay(self, attempt: int) -> float:
        if self._moved is not None:
            return self._moved.after_ms / 1000
        return self._backoff.delay_s(attempt, self._rand)

    async def _candidates(self) -> list[str]:
        """Endpoints to try, in order: RECONNECT's, the route's sticky room, the last good
        one (a resume needs the same room; normally it is the sticky one), the route's
        others; without the ones that failed since the last session (unless none is left)."""
        current = await self._current_route()
        moved = self._moved.endpoints if self._moved is not None else ()
        self._moved = None
        found = route.candidates(moved, current.endpoints if current else (), self._good,
                                 self._failed)
        if all(route.hostport(e) in self._failed for e in found):
            self._failed.clear()    # every one failed (or none is known): try them afresh
        return found

    async def _current_route(self) -> route.Route | None:
        """The cached route, or a new one; None when the dispatcher is unreachable now.

        The dispatcher's refusals (unknown app, bad request) propagate: they are final.
        """
        loop = asyncio.get_running_loop()
        cached = self._routes.get(self.net)
        if cached is not None and loop.time() < cached[1]:
            return cached[0]
        assert self._http is not None
        try:
            fetched = await route.fetch(self._http, self.dispatcher_url, self.app, self.uid,
                                        net=self.net, failed=self._failed,
                                        timeout_s=self.open_timeout_s, attempt=self._attempt,
                                        isp=self.isp, idc=self.idc)
        except (Unavailable, ProtocolError) as exc:
            log.info("pushwire client %s/%s: no route: %s", self.app, self.uid, exc.message)
            self._failed.clear()    # maybe every room was excluded: ask plainly next time
            return None
        self._backoff = fetched.backoff
        self._routes[self.net] = (fetched, loop.time() + fetched.ttl_s)
        return fetched

    def _mark_failed(self, endpoint: str) -> None:
        self._failed[route.hostport(endpoint)] = None
        while len(self._failed) > FAILED_KEPT:
            del self._failed[next(iter(self._failed))]

    # -- one connection ----------------------------------------------------------------------

    async def _session(self, endpoint: str) -> None:
        """Open, authenticate and serve one connection until it closes.

        Raises Unavailable when no session opened (the caller tries the next endpoint) and
        ClientClosed when the room says not to reconnect; returns when an open session ended.
        """
        link = _Link(await self._open(endpoint), endpoint)
        try:
            await self._converse(link)
        except ProtocolError as exc:
            log.warning("pushwire client %s/%s: %s broke the protocol: %s", self.app, self.uid,
                        endpoint, exc.message)
            await link.ws.close(1002, exc.message[:100])
        except ConnectionClosed:
            pass
        except TimeoutError as exc:
            raise Unavailable(f"{endpoint}: no AUTH_REPLY within {self.open_timeout_s}s") \
                from exc
        finally:
            await self._dropped(link)
        self._verdict(link)

    def _trust(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = trust.client_context(self.cafile)
        return self._tls

    async def _open(self, endpoint: str) -> ClientConnection:
        try:
            ws = await connect(endpoint, subprotocols=[Subprotocol(protocol.SUBPROTOCOL)],
                               compression=None,   # the room never negotiates it (§1)
                               open_timeout=self.open_timeout_s, ping_interval=None,
                               close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_MESSAGE,
                               proxy=None,   # like aiohttp for the route: no proxy from env
                               ssl=self._trust() if endpoint.startswith("wss:") else None)
        except (OSError, TimeoutError, WebSocketException) as exc:
            why = str(exc) or type(exc).__name__
            raise Unavailable(f"cannot open {endpoint}: {why}") from exc
        if ws.subprotocol != protocol.SUBPROTOCOL:
            await ws.close(1002, "subprotocol")
            raise Unavailable(f"{endpoint} does not speak {protocol.SUBPROTOCOL}")
        return ws

    async def _converse(self, link: _Link) -> None:
        """Send AUTH, then handle everything the room sends until the connection closes."""
        await link.ws.send(protocol.auth(self._next_seq(), self._auth_request()))
        async with asyncio.timeout(self.open_timeout_s) as deadline:
            link.deadline = deadline
            async for raw in link.ws:
                if isinstance(raw, str):
                    raise ProtocolError("text message on the binary subprotocol")
                link.last_rx = asyncio.get_running_loop().time()
                for event in protocol.events(raw):
                    await self._handle(link, event)

    def _auth_request(self) -> wire_pb2.Auth:
        return wire_pb2.Auth(app=self.app, uid=self.uid, device=self.device, token=self.token,
                             heartbeat_s=self.heartbeat_s, resume=self.resume_token,
                             broadcast_cursor=self.cursors.get(self.app, 0), net=self.net)

    async def _handle(self, link: _Link, event: Event) -> None:
        if isinstance(event, Pushed):
            await self._receive(link, event.message)
        elif isinstance(event, Replied | Failed) and event.seq in self._pending:
            self._resolve(event)
        elif isinstance(event, Authed):
            await self._opened(link, event.reply)
        elif isinstance(event, Kicked):
            link.kicked = event
        elif isinstance(event, Moved):
            log.info("pushwire client %s/%s moves to %s: %s", self.app, self.uid,
                     event.endpoints, event.reason)
            self._moved = event
            await link.ws.close(1000, "moved")
        elif isinstance(event, Failed):
            log.warning("pushwire client %s/%s: room error %d: %s", self.app, self.uid,
                        event.code, event.message)
            link.error = event

    async def _opened(self, link: _Link, reply: wire_pb2.AuthReply) -> None:
        """AUTH_REPLY arrived: the session is open. Start heartbeating, restore bindings."""
        link.authed = True
        if link.deadline is not None:
            link.deadline.reschedule(None)
        self.session = reply
        self.resume_token = reply.resume_token or self.resume_token
        self._good = link.endpoint
        self._failed.clear()
        link.heartbeat = asyncio.create_task(self._heartbeat(link, max(reply.heartbeat_s, 1)),
                                             name=f"pushwire-heartbeat:{self.uid}")
        if not reply.resumed:
            for app, binding in self._binds.items():
                await link.ws.send(protocol.bind(self._next_seq(), app, binding.token,
                                                 binding.topics, self.cursors.get(app, 0)))
        self._ws = link.ws
        self._up.set()
        log.info("pushwire client %s/%s: session %s on %s (heartbeat %ds%s)", self.app,
                 self.uid, reply.session_id, link.endpoint, reply.heartbeat_s,
                 ", resumed" if reply.resumed else "")

    async def _receive(self, link: _Link, message: Message) -> None:
        """Queue a new message; re-ack a copy of one the application already took."""
        key = (message.app, message.id)
        if message.id and not self._seen.add(key):
            if message.kind is Kind.UNICAST and self._seen.stage(key) is not Stage.QUEUED:
                self._seen.advance(key, Stage.ACKED)
                self._gather_ack(message.app, message.id)
            return
        link.blocked = True     # a full queue stalls reading: that is the backpressure
        try:
            await self._queue.put(message)
        finally:
            link.blocked = False
        self._wake.set()

    def _resolve(self, event: Replied | Failed) -> None:
        future = self._pending.get(event.seq)
        if future is None or future.done():
            return
        if isinstance(event, Failed):
            future.set_exception(from_code(event.code, event.message))
        else:
            future.set_result(event)

    async def _heartbeat(self, link: _Link, interval_s: int) -> None:
        """Send HEARTBEAT every interval; abort the link when nothing at all came back within
        HEARTBEAT_REPLY_S of one (§5: a pulled cable sends no FIN, only a deadline notices;
        a dead link cannot carry a closing handshake either)."""
        loop = asyncio.get_running_loop()
        wait_s = min(HEARTBEAT_REPLY_S, interval_s / 2)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval_s - wait_s)
                sent_at = loop.time()
                await link.ws.send(protocol.heartbeat(self._next_seq()))
                await asyncio.sleep(wait_s)
                if link.last_rx < sent_at and not link.blocked:
                    log.warning("pushwire client %s/%s: no reply from %s for %.1fs, reconnecting",
                                self.app, self.uid, link.endpoint, loop.time() - sent_at)
                    link.ws.transport.abort()
                    return

    async def _dropped(self, link: _Link) -> None:
        """The connection ends: stop its heartbeat, fail its requests, close the socket."""
        if self._ws is link.ws:
            self._ws = None
            self.session = None
            self._up.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("connection lost"))
        if link.heartbeat is not None:
            link.heartbeat.cancel()
            await asyncio.wait({link.heartbeat})
        await link.ws.close()

    def _verdict(self, link: _Link) -> None:
        """After a connection closed: raise ClientClosed when the room said to stop, and
        Unavailable when it closed before the session opened."""
        code, kicked = link.ws.close_code, link.kicked
        end = protocol.ending(code, kicked.code if kicked is not None else None)
        if end.decision is protocol.Decision.STOP:
            reason = kicked.reason if kicked is not None else (
                link.ws.close_reason or (link.error.message if link.error else ""))
            raise ClientClosed(end.code, reason)
        if not link.authed:
            raise Unavailable(f"{link.endpoint} closed before AUTH_REPLY ({code})")
        log.info("pushwire client %s/%s: %s closed (%s%s)", self.app, self.uid, link.endpoint,
                 code, f" {link.ws.close_reason}" if link.ws.close_reason else "")
