"""`pushwire broadcast` and `pushwire publish` against a small fake center."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cli import main
from cli.broadcast import Center, Watch, broadcast, broadcast_body, progress_line, publish
from cli.clients import UsageError


def job(state: str = "running", delivered: int = 0, rooms_done: int = 0,
        started: bool = True) -> dict[str, Any]:
    shares = [{"room": r, "state": "running" if started else "queued", "connections": 50}
              for r in ("r1", "r2")]
    return {"id": "77", "state": state, "delivered": delivered, "rooms": 2,
            "rooms_done": rooms_done, "rate_per_s": 100.0, "measured_per_s": 98.4,
            "elapsed_s": 0.5, "shares": shares}


class FakeCenter:
    """Answers like center: the job advances 25 deliveries per GET."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.delivered = 0
        self.cancelled = False

    async def create(self, request: web.Request) -> web.Response:
        self.calls.append(("POST", request.path, await request.json()))
        return web.json_response(job(started=False), status=201)

    async def get(self, request: web.Request) -> web.Response:
        self.calls.append(("GET", request.path, None))
        if request.match_info["id"] != "77":
            return web.json_response({"error": {"code": 1006, "message": "unknown broadcast"}},
                                     status=404)
        if self.cancelled:
            return web.json_response(job("cancelled", self.delivered))
        self.delivered = min(self.delivered + 25, 100)
        state = "done" if self.delivered == 100 else "running"
        return web.json_response(job(state, self.delivered, 2 if state == "done" else 0))

    async def cancel(self, request: web.Request) -> web.Response:
        self.calls.append(("DELETE", request.path, None))
        self.cancelled = True
        return web.json_response(job("cancelled", self.delivered))

    async def publish(self, request: web.Request) -> web.Response:
        self.calls.append(("POST", request.path, await request.json()))
        return web.json_response({"rooms": 2, "delivered": 3, "failed_rooms": 0})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeCenter, str]]:
    center = FakeCenter()
    app = web.Application()
    app.add_routes([web.post("/v1/apps/demo/broadcasts", center.create),
                    web.get("/v1/apps/demo/broadcasts/{id}", center.get),
                    web.delete("/v1/apps/demo/broadcasts/{id}", center.cancel),
                    web.post("/v1/apps/demo/topics/{topic}/publish", center.publish)])
    server = TestServer(app)
    await server.start_server()
    yield center, str(server.make_url("")).rstrip("/")
    await server.close()


def args(**kw: Any) -> argparse.Namespace:
    defaults = {"app": "demo", "data": "hi", "data_b64": None, "rate": None, "ttl": None,
                "status": None, "cancel": None, "no_wait": False}
    return argparse.Namespace(**{**defaults, **kw})


def test_progress_line_shows_bar_counts_rooms_rate_and_state() -> None:
    line = progress_line(job(delivered=25), width=8)
    assert line.startswith("[##------]  25% 25/100 delivered, rooms 0/2, 98/s of 100/s, 0.5s")
    assert line.endswith("running")
    assert "0/? delivered" in progress_line(job(started=False) | {"shares": []})
    assert progress_line(job("done", 100, 2), width=4).startswith("[####] 100% 100/100")


def test_body_carries_rate_and_ttl_and_refuses_nonsense() -> None:
    assert broadcast_body(args(rate=500.0, ttl=60)) == {"data": "hi", "rate_per_s": 500.0,
                                                        "ttl_s": 60}
    assert broadcast_body(args(data=None, data_b64="aGk=")) == {"data_b64": "aGk="}
    with pytest.raises(UsageError):
        broadcast_body(args(rate=0.0))
    with pytest.raises(UsageError):
        broadcast_body(args(data=None, data_b64="%%%"))


async def test_broadcast_shows_progress_until_done(fake: tuple[FakeCenter, str]) -> None:
    center, url = fake
    out, err = io.StringIO(), io.StringIO()
    code = await broadcast(Center(url, "demo", "k"), args(rate=100.0), broadcast_body(
        args(rate=100.0)), out, err, None)
    assert code == 0
    assert center.calls[0] == ("POST", "/v1/apps/demo/broadcasts",
                               {"data": "hi", "rate_per_s": 100.0})
    lines = err.getvalue().splitlines()
    assert lines[0] == "broadcast 77 of demo: 2 rooms at 100/s"
    assert "100/100 delivered" in lines[-1] and lines[-1].endswith("done")
    assert json.loads(out.getvalue())["state"] == "done"


async def test_ctrl_c_offers_cancel(fake: tuple[FakeCenter, str]) -> None:
    center, url = fake
    out, err = io.StringIO(), io.StringIO()
    questions: list[str] = []

    def ask(question: str) -> str:
        questions.append(question)
        return "y"

    watch = Watch(Center(url, "demo", "k"), out, err, ask, every_s=5.0)
    watch.interrupted.set()                           # Ctrl-C while watching
    async with watch.center:
        assert await watch.run("77") == 1
    assert questions == ["Cancel broadcast 77? [y/N] "]
    assert ("DELETE", "/v1/apps/demo/broadcasts/77", None) in center.calls
    assert json.loads(out.getvalue())["state"] == "cancelled"


async def test_ctrl_c_answered_no_keeps_watching(fake: tuple[FakeCenter, str]) -> None:
    center, url = fake
    watch = Watch(Center(url, "demo", "k"), io.StringIO(), io.StringIO(), lambda _q: "n",
                  every_s=0.01)
    watch.interrupted.set()
    async with watch.center:
        assert await watch.run("77") == 0
    assert all(method != "DELETE" for method, _, _ in center.calls)


async def test_ctrl_c_without_a_terminal_leaves_the_job_running(
        fake: tuple[FakeCenter, str]) -> None:
    center, url = fake
    err = io.StringIO()
    watch = Watch(Center(url, "demo", "k"), io.StringIO(), err, None, every_s=5.0)
    watch.interrupted.set()
    async with watch.center:
        assert await watch.run("77") == 130
    assert "--cancel 77" in err.getvalue()
    assert not center.cancelled


async def test_status_cancel_errors_and_publish(fake: tuple[FakeCenter, str]) -> None:
    center, url = fake
    out, err = io.StringIO(), io.StringIO()
    assert await broadcast(Center(url, "demo", "k"), args(status="77"), None, out, err,
                           None) == 0
    assert json.loads(out.getvalue())["id"] == "77"
    assert await broadcast(Center(url, "demo", "k"), args(status="5"), None, out, err,
                           None) == 1
    assert "HTTP 404: unknown broadcast" in err.getvalue()
    assert await broadcast(Center(url, "demo", "k"), args(cancel="77"), None, out, err,
                           None) == 0
    assert center.cancelled
    out = io.StringIO()
    assert await publish(Center(url, "demo", "k"), "news", {"data": "x"}, out, err) == 0
    assert json.loads(out.getvalue()) == {"rooms": 2, "delivered": 3, "failed_rooms": 0}
    assert center.calls[-1] == ("POST", "/v1/apps/demo/topics/news/publish", {"data": "x"})


def test_commands_are_wired_into_the_cli() -> None:
    parser = main.build_parser()
    parsed = parser.parse_args(["broadcast", "--app", "demo", "--data", "x", "--rate", "5"])
    assert parsed.rate == 5.0
    parsed = parser.parse_args(["publish", "--app", "demo", "--topic", "t", "--data", "x"])
    assert parsed.topic == "t"


async def test_a_second_ctrl_c_at_the_question_leaves_the_job_running(
        fake: tuple[FakeCenter, str]) -> None:
    center, url = fake
    err = io.StringIO()
    loop = asyncio.get_running_loop()
    release = threading.Event()
    watch = Watch(Center(url, "demo", "k"), io.StringIO(), err, None, every_s=5.0)

    def ask(_question: str) -> str:                   # the user presses Ctrl-C again
        loop.call_soon_threadsafe(watch.interrupted.set)
        release.wait(5)
        return "y"

    watch.ask = ask
    watch.interrupted.set()
    try:
        async with watch.center:
            assert await watch.run("77") == 130
    finally:
        release.set()
    assert "keeps running" in err.getvalue() and not center.cancelled
