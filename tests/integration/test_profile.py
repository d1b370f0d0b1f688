"""Runtime profiling through center's admin API (issue #13 item 7, docs/operations.md §9): a
room busy with clients and pushes is profiled over HTTP and its stacks show the room's own
code at work; a second profile of the same instance meanwhile is refused with 409; the CLI
writes a speedscope file; bad requests get 4xx JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from cli.main import main
from tests.integration.cluster import Cluster
from tests.integration.crowd import close_all, crowd, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """One embedded cluster for the module: every profile a test asks for has ended when
    the test does."""
    async with Cluster(tmp_path_factory.mktemp("profile"), real=False) as c:
        yield c

# A frame of the room's own code at work: any module of services/room/ but its entry point,
# which is on the main thread's stack even while the room waits.
ROOM_CODE = "(services/room/"
ENTRY = "(services/room/main.py:"


@contextlib.asynccontextmanager
async def pushing(cluster: Cluster, uids: list[str]) -> AsyncIterator[list[int]]:
    """Pushes to `uids`, 20 uids a call, from 4 callers back to back until the block ends (a
    refusal or a timeout under load does not end them); yields the count of accepted pushes
    so far."""
    done = [0]

    async def loop() -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                status, _ = await cluster.push(random.sample(uids, 20), "load")
                done[0] += status == 200

    tasks = [asyncio.create_task(loop()) for _ in range(4)]
    try:
        yield done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def profile(http: aiohttp.ClientSession, cluster: Cluster, instance: str,
                  key: str | None = None, **body: Any) -> tuple[int, str, Any]:
    """(status, content type, body: text or JSON) of one profile request."""
    key = cluster.admin_key if key is None else key
    async with http.post(f"{cluster.center()}/v1/admin/instances/{instance}/profile",
                         json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        text = await resp.text()
        data = json.loads(text) if resp.content_type == "application/json" else text
        return resp.status, resp.content_type, data


def working_frames(collapsed: str) -> int:
    """Samples whose stack holds a frame of the room at work."""
    return sum(int(line.rsplit(" ", 1)[1]) for line in collapsed.splitlines()
               if line.replace(ENTRY, "").count(ROOM_CODE))


async def test_a_busy_room_profiled_through_the_admin_api(cluster: Cluster) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        uids = [f"u{i}" for i in range(200)]
        listeners = await crowd(cluster, len(uids))
        try:
            async with pushing(cluster, uids) as pushed:
                async def flowing() -> bool:
                    return pushed[0] >= 20

                await eventually(flowing, timeout=60)
                # Two alike at once: one profiles for 3 s, the other is refused meanwhile.
                first, second = await asyncio.gather(
                    *(profile(http, cluster, "room-0", seconds=3, hz=1000) for _ in range(2)))
        finally:
            await close_all(listeners)
        assert any(m.data == b"load" for x in listeners for m in x.messages)
        done, refused = sorted((first, second), key=lambda r: r[0])
        assert refused[0] == 409 and refused[2]["error"]["message"] == (
            "a profile of this instance is already running; retry when it ends")
        assert done[0] == 200 and done[1] == "text/plain"
        lines = done[2].splitlines()
        assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
        assert working_frames(done[2]) > 0, done[2][:4000]

        # speedscope of center itself; the instance is free again.
        status, media, doc = await profile(http, cluster, "center-0", seconds=1,
                                           format="speedscope")
        assert (status, media) == (200, "application/json")
        files = {f["file"] for f in doc["shared"]["frames"]}
        assert any(f.startswith("services/center/") for f in files)
        assert {p["type"] for p in doc["profiles"]} == {"sampled"}


async def test_refusals_and_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for instance, key, body, status in (
                ("room-0", "", {}, 401),
                ("room-0", cluster.app.api_keys[0], {}, 401),
                ("nobody", None, {"seconds": 1}, 404),
                ("dispatcher", None, {"seconds": 1}, 400),
                ("room-0", None, {"seconds": 0.5}, 400),
                ("room-0", None, {"seconds": 61}, 400),
                ("room-0", None, {"seconds": 1, "hz": 5000}, 400),
                ("room-0", None, {"seconds": 1, "format": "pprof"}, 400)):
            if instance == "dispatcher":
                instance = cluster.discovery.instances("dispatcher")[0].id  # type: ignore[union-attr]
            got, media, answer = await profile(http, cluster, instance, key, **body)
            assert (got, media) == (status, "application/json"), (instance, body, answer)
            assert "127.0.0.1" not in json.dumps(answer)

        saver = cluster.discovery.instances("saver")[0].id        # type: ignore[union-attr]
        out = tmp_path / "saver.json"
        argv = ["profile", saver, "--seconds", "1", "-o", str(out), "--center",
                cluster.center(), "--admin-key", cluster.admin_key]
        assert await asyncio.to_thread(main, argv) == 0
        doc = json.loads(out.read_text())
        assert any(f["file"].startswith("services/saver/") for f in doc["shared"]["frames"])
        assert await asyncio.to_thread(main, [*argv[:2], "--seconds", "1", "-o",
                                              str(tmp_path / "x"), "--center",
                                              cluster.center(), "--admin-key", "wrong" * 4]) == 1
