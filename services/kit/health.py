"""Liveness and readiness of one service instance (docs/observability.md §3).

    live    the process answers: its event loop runs (GET /health/live is 200 until it exits;
            a blocked loop does not answer, and the probe's timeout says so).
    ready   it can do its job now: announced with its addresses, not stopping, not draining,
            and every dependency it needs answers. GET /health/ready (and GET /health, which
            compose and the image's HEALTHCHECK ask) is 200 then, else 503 saying what is
            missing; grpc.health.v1 answers SERVING exactly then
            (services/kit/rpc/health.py).

    health = Health(lambda: host.state)
    health.need("saver", watch.check)           # a check: None when fine, else what is wrong
    life.spawn(health.run(), ...)               # checks every `every_s`, not at each probe

Checks run in a loop, not when a probe asks: probes cost nothing and never pile calls on a
dead peer. A check that raises or takes longer than `timeout_s` counts as failed. Gauges:
`pushwire_ready` (1/0) and `pushwire_dependency_up{dependency}` (1/0 per check).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Gauge

from services.kit.lifecycle import wait_set

log = logging.getLogger("pushwire.health")

READY = Gauge("pushwire_ready", "1 while this instance is ready (docs/observability.md §3)")
DEPENDENCY_UP = Gauge("pushwire_dependency_up",
                      "1 while a dependency this instance needs answers, by dependency",
                      ["dependency"])

Check = Callable[[], Awaitable[str | None]]
"""check() -> None when the dependency answers, else a short fixed text saying what is wrong
(it is served on the metrics port: no addresses, no exception text)."""

Listener = Callable[[bool], Awaitable[None]]


class Health:
    """Readiness from the instance's own state and its dependencies' checks."""

    def __init__(self, instance: str, state: Callable[[], str | None], *,
                 every_s: float = 1.0, timeout_s: float = 1.0) -> None:
        """`state()` is None while the instance serves, else why not ("starting",
        "stopping", "draining")."""
        self.instance = instance
        self.state = state
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.checks: dict[str, Check] = {}
        self.failing: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._last: bool | None = None
        self._soon = asyncio.Event()

    def need(self, dependency: str, check: Check) -> None:
        """Be ready only while `check` passes; failing until its first run."""
        self.checks[dependency] = check
        self.failing[dependency] = "not checked yet"
        DEPENDENCY_UP.labels(dependency).set(0)
        self.soon()

    def soon(self) -> None:
        """Refresh now rather than at the next period (a dependency was added, the instance
        announced itself)."""
        self._soon.set()

    def listen(self, listener: Listener) -> None:
        """Call `listener(ready)` after each refresh (the gRPC health status follows)."""
        self._listeners.append(listener)

    def problems(self) -> dict[str, str]:
        """What stands between this instance and ready: {} when ready."""
        state = self.state()
        return {**({"instance": state} if state else {}), **self.failing}

    @property
    def ready(self) -> bool:
        return not self.problems()

    async def refresh(self) -> bool:
        """Run every check once (one after the other, each bounded by `timeout_s`: no task
        is made, so the process's task count stays flat); tell the listeners; return
        readiness."""
        results = {name: await self._run(check) for name, check in list(self.checks.items())}
        for name, problem in results.items():        # all at once: probes see one state
            DEPENDENCY_UP.labels(name).set(0 if problem else 1)
            if problem:
                self.failing[name] = problem
            else:
                self.failing.pop(name, None)
        ready = self.ready
        READY.set(1 if ready else 0)
        if ready != self._last:
            log.info("%s", "ready" if ready else f"not ready: {self.problems()}")
            self._last = ready
        for listener in self._listeners:
            await listener(ready)
        return ready

    async def run(self) -> None:
        """Refresh every `every_s`, or sooner when asked, until cancelled (owned by the
        service's task group)."""
        while True:
            self._soon.clear()
            await self.refresh()
            await wait_set(self._soon, self.every_s)

    async def _run(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await check()
        except TimeoutError:
            return "no answer in time"
        except Exception:
            log.warning("health check failed", exc_info=True)
            return "check failed"

    # --- HTTP (the metrics listener) ----------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/health/live", self.live), web.get("/health/ready", self.readiness),
                web.get("/health", self.readiness)]

    async def live(self, _request: web.Request) -> web.Response:
        """GET /health/live: 200 while the process answers."""
        return web.json_response({"ok": True, "instance": self.instance})

    async def readiness(self, _request: web.Request) -> web.Response:
        """GET /health/ready, GET /health: 200 when ready, else 503 with what is missing."""
        problems = self.problems()
        body: dict[str, object] = {"ok": not problems, "instance": self.instance}
        if problems:
            body["not_ready"] = problems
        return web.json_response(body, status=503 if problems else 200)
