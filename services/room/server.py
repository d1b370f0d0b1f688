"""The room's WebSocket listener: accepts connections, owns their timer sweep, closes them all.

    server = RoomServer(backend, timeouts=..., limits=...)
    await server.start(host, port)          # listening
    life.spawn(server.run(), "room-sweep")  # the one timer task of the room (DESIGN.md §3)
    ...
    await server.close(CloseCode.GOING_AWAY, "shutting down")   # stop accepting, close all

Connections live in `server.hub` once authenticated (services/room/hub.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from ssl import SSLContext

from services.kit.networks import NO_PROXIES, TrustedProxies
from services.room.backend import RoomBackend
from services.room.connection import Connection, Context, Limits
from services.room.hub import Hub
from services.room.protocol import DEFAULT_BOUNDS, Bounds, CloseCode, Timeouts
from services.room.timers import TimerWheel

log = logging.getLogger("pushwire.room.server")


class RoomServer:
    """Listener and owner of a room's client connections."""

    def __init__(self, backend: RoomBackend, *, hub: Hub[Connection] | None = None,
                 timeouts: Timeouts | None = None, limits: Limits | None = None,
                 bounds: Bounds = DEFAULT_BOUNDS, tick_s: float = 0.5,
                 resolution_s: float = 1.0, proxies: TrustedProxies = NO_PROXIES,
                 proxy_timeout_s: float = 5.0) -> None:
        """`hub` indexes the authenticated connections (a new one when None): the room's
        other parts (delivery, drain) share it. Connections from `proxies` start with a
        PROXY protocol header, within `proxy_timeout_s` (services/room/connection.py)."""
        self.hub: Hub[Connection] = Hub() if hub is None else hub
        self.wheel: TimerWheel[Connection] = TimerWheel(resolution_s)
        self._ctx = Context(backend, self.hub, self.wheel, timeouts or Timeouts(),
                            limits or Limits(), bounds, proxies, proxy_timeout_s)
        self._tick_s = tick_s
        self._server: asyncio.Server | None = None

    @property
    def connection_count(self) -> int:
        """Open TCP connections, authenticated or not (the load published in discovery)."""
        return len(self._ctx.connections)

    @property
    def request_count(self) -> int:
        """Backend requests in flight (AUTH, UP, BIND of another app): the room's short
        tasks, bounded by `Limits.max_tasks`."""
        return len(self._ctx.tasks)

    @property
    def port(self) -> int:
        """The bound port (useful after `start(port=0)`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("room server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, *, reuse_port: bool = False,
                    ssl: SSLContext | None = None) -> None:
        """Listen for clients. reuse_port lets several room processes share one port; `ssl`
        serves wss:// (services/kit/tls.py): the TLS handshake is bounded by the AUTH timeout,
        the TLS close (close_notify both ways) by the close timeout."""
        loop = asyncio.get_running_loop()
        timeouts = self._ctx.timeouts
        # A deep backlog: reconnect storms arrive faster than one accept loop drains them.
        self._server = await loop.create_server(
            lambda: Connection(self._ctx), host, port, reuse_port=reuse_port, backlog=4096,
            ssl=ssl, ssl_handshake_timeout=timeouts.auth_s if ssl else None,
            ssl_shutdown_timeout=timeouts.close_s if ssl else None)
        log.info("listening on %s:%d", host, self.port)

    async def run(self) -> None:
        """Sweep the timer wheel every tick until cancelled; run it in the service's group."""
        while True:
            await asyncio.sleep(self._tick_s)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> int:
        """Act on every connection whose deadline passed at `now`; return how many."""
        due = self.wheel.sweep(now)
        for conn in due:
            conn.on_deadline(now)
        return len(due)

    async def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "shutting down") -> None:
        """Stop listening, close every connection with `code`, let in-flight backend requests
        and close handshakes finish within the close timeout, then cancel and abort the rest."""
        if self._server is not None:
            self._server.close()
        ctx = self._ctx
        ctx.drained = asyncio.Event()
        for conn in list(ctx.connections):
            conn.close(code, reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.timeouts.close_s
        if ctx.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ctx.timeouts.close_s):
                    await ctx.drained.wait()
        for conn in list(ctx.connections):
            conn.transport.abort()      # close handshake timed out
        await self._cancel_tasks(max(0.0, deadline - loop.time()))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)          # let aborted transports report connection_lost
        log.info("closed with %d", code)

    async def _cancel_tasks(self, grace: float) -> None:
        tasks = set(self._ctx.tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
