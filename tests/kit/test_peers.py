"""services/kit/rpc/peers.py: routing keys to the live instances of a kind, over a real
file-backed discovery (two LocalDiscovery objects on one folder stand for two processes)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushwire_protocol.errors import Unavailable
from services.kit.discovery.local import LocalDiscovery
from services.kit.discovery.models import Instance
from services.kit.rpc.peers import Peers, user_key

POLL = 0.02


@pytest.fixture
async def views(tmp_path: Path) -> AsyncIterator[tuple[LocalDiscovery, LocalDiscovery]]:
    mine, theirs = LocalDiscovery(str(tmp_path), POLL), LocalDiscovery(str(tmp_path), POLL)
    await mine.start(("register",))
    await theirs.start(("register",))
    yield mine, theirs
    await mine.close()
    await theirs.close()


def register(instance_id: str, port: int) -> Instance:
    return Instance("register", instance_id, addresses={"grpc": f"127.0.0.1:{port}"},
                    pid=os.getpid())


async def test_a_key_waits_for_an_instance_that_appears_while_none_is_in_view(
        views: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    mine, theirs = views
    peers = Peers(mine, "register")
    with pytest.raises(Unavailable, match="no register instance"):
        peers.owner(user_key("demo", "u1"))
    waiting = asyncio.ensure_future(peers.owner_soon(user_key("demo", "u1"), 30))
    await asyncio.sleep(POLL * 5)
    assert not waiting.done()                       # nothing to route to yet: it waits
    await theirs.announce(register("register-new", 9100))   # another process, a restart
    assert await asyncio.wait_for(waiting, 30) == "127.0.0.1:9100"


async def test_no_instance_in_time_is_unavailable(
        views: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    peers = Peers(views[0], "register")
    with pytest.raises(Unavailable, match="no register instance"):
        await peers.owner_soon(user_key("demo", "u1"), POLL * 5)


async def test_with_an_instance_in_view_the_owner_is_answered_at_once(
        views: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    mine, _ = views
    await mine.announce(register("register-a", 9101))
    peers = Peers(mine, "register")
    assert await peers.owner_soon(user_key("demo", "u1"), 0) == "127.0.0.1:9101"
