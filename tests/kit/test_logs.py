"""services/kit/logs.py: the two formats with their context fields, and center's and the
dispatcher's access line (services/kit/http.py) over a real socket."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from pushwire_protocol.errors import NotFound
from services.kit import http, logs

log = logging.getLogger("pushwire.test")


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    made = log.makeRecord(log.name, logging.WARNING, __file__, 1, message, args or ("you",),
                          None, extra=extra or None)
    return made


def test_json_line_has_the_fields_and_the_extras() -> None:
    line = logs.JsonFormatter("room", "room-0").format(
        record(app="demo", uid="u1", conn="s-1", message_id=42, unrelated="x"))
    event = json.loads(line)
    assert event["ts"].endswith("Z") and "T" in event["ts"]
    assert {k: v for k, v in event.items() if k != "ts"} == {
        "level": "warning", "service": "room", "instance": "room-0", "logger": "pushwire.test",
        "message": "hello you", "app": "demo", "uid": "u1", "conn": "s-1", "message_id": "42"}


def test_context_holds_for_the_block_and_its_tasks_and_extra_wins() -> None:
    fmt = logs.JsonFormatter("center", "c")

    async def inside() -> dict[str, str]:
        return dict(json.loads(fmt.format(record())))

    async def main() -> None:
        with logs.context(app="demo", uid="u1", room=None):
            task = await asyncio.create_task(inside())
            assert task["app"] == "demo" and task["uid"] == "u1" and "room" not in task
            assert json.loads(fmt.format(record(uid="u2")))["uid"] == "u2"
        assert "app" not in json.loads(fmt.format(record()))

    asyncio.run(main())


def test_json_carries_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = log.makeRecord(log.name, logging.ERROR, __file__, 1, "failed", (),
                              __import__("sys").exc_info())
    line = logs.JsonFormatter("saver", "s").format(made)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_text_line_appends_context_fields() -> None:
    line = logs.TextFormatter("room", "room-0").format(record(app="demo", uid="u1"))
    assert line.endswith("WARNING room[room-0] pushwire.test: hello you app=demo uid=u1")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What a service writes with log_format json (formatted when logged, as in a service)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("center", "center-0"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


async def test_access_line_has_no_query_and_no_header(json_lines: io.StringIO) -> None:
    async def user(request: web.Request) -> web.Response:
        log.info("inside")
        if request.match_info["uid"] == "ghost":
            raise NotFound("unknown user")
        return web.json_response({})

    app = http.application(access_log=True)
    app.router.add_get("/v1/apps/{app}/users/{uid}", user)
    runner, port = await http.start_site(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:
            for uid in ("u1", "ghost"):
                async with client.get(f"http://127.0.0.1:{port}/v1/apps/demo/users/{uid}"
                                      "?token=sekrit-in-query",
                                      headers={"Authorization": "Bearer sekrit-header"}) as r:
                    await r.read()
    finally:
        await runner.cleanup()
    text = json_lines.getvalue()
    assert "sekrit" not in text
    events = [json.loads(line) for line in text.splitlines()]
    access = [e for e in events if e["logger"] == "pushwire.access"]
    assert [(e["method"], e["path"], e["status"], e["app"], e["uid"]) for e in access] == [
        ("GET", "/v1/apps/demo/users/u1", 200, "demo", "u1"),
        ("GET", "/v1/apps/demo/users/ghost", 404, "demo", "ghost")]
    assert all(e["remote"] == "127.0.0.1" and e["duration_ms"] >= 0 for e in access)
    inside = [e for e in events if e["message"] == "inside"]
    assert [(e["app"], e["uid"]) for e in inside] == [("demo", "u1"), ("demo", "ghost")]


async def test_no_access_line_unless_switched_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    runner, port = await http.start_site(http.application(), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client, \
                client.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.name == "pushwire.access"]


@pytest.mark.parametrize(("url", "safe"), [
    ("https://user:pass@idp.example:8443/jwks?key=k#f", "https://idp.example:8443/jwks"),
    ("http://[::1]/x?token=t", "http://[::1]/x"),
    ("https://idp.example/.well-known/jwks.json", "https://idp.example/.well-known/jwks.json")])
def test_safe_url_drops_what_may_hold_a_credential(url: str, safe: str) -> None:
    assert logs.safe_url(url) == safe
