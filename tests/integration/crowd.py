"""Many SDK clients in one test process, each recording what it received (with the time)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pushwire_sdk.client import Message, PushClient
from tests.integration.cluster import Cluster

T = TypeVar("T")


@dataclass(eq=False)
class Listener:
    """One client and every message it got; a task reads its messages all along."""

    client: PushClient
    got: list[tuple[float, Message]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def messages(self) -> list[Message]:
        return [m for _, m in self.got]

    async def _read(self) -> None:
        async for message in self.client.messages():
            self.got.append((time.monotonic(), message))

    async def start(self) -> Listener:
        await self.client.connect()
        self.reader = asyncio.create_task(self._read())
        return self

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.client.close()


def listener(cluster: Cluster, uid: str, cursor: int = 0) -> Listener:
    client = PushClient(cluster.dispatcher, cluster.app.id, uid, cluster.token(uid),
                        device="d", broadcast_cursor=cursor, connect_timeout_s=60)
    return Listener(client)


async def crowd(cluster: Cluster, n: int, prefix: str = "u", at_once: int = 50) \
        -> list[Listener]:
    """n connected listeners (connected `at_once` at a time). When one cannot connect, the
    others are closed before the error is raised: nothing is left open."""
    out: list[Listener] = []
    try:
        for start in range(0, n, at_once):
            batch = [listener(cluster, f"{prefix}{i}")
                     for i in range(start, min(n, start + at_once))]
            out += batch
            failed = [r for r in await asyncio.gather(*(x.start() for x in batch),
                                                      return_exceptions=True)
                      if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
    except BaseException:
        await close_all(out)
        raise
    return out


@contextlib.asynccontextmanager
async def connected(cluster: Cluster, uids: list[str], device: str = "d1") \
        -> AsyncIterator[list[PushClient]]:
    """Connected clients of `uids` (app of `cluster`), all closed when the block ends, also
    when one could not connect."""
    clients = [PushClient(cluster.dispatcher, cluster.app.id, uid, cluster.token(uid),
                          device=device) for uid in uids]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        yield clients
    finally:
        for c in clients:
            await c.close()


async def close_all(listeners: list[Listener]) -> None:
    await asyncio.gather(*(x.close() for x in listeners))


async def until(condition: Callable[[], bool], timeout: float = 10.0,
                every: float = 0.01) -> None:
    """Return once `condition()` holds; fail the test if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0,
                     every: float = 0.1) -> T:
    """The first truthy value `probe` returns within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)
