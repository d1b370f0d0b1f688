"""saver's wiring: hot and durable stores, Inboxes, gRPC face, metrics.

Start-up: announce without addresses (for the unique node number of the id generator), open
the stores and recover the hot store if it was lost, serve gRPC, then publish the address so
callers find it. Shutdown: stop gRPC (finishing calls in flight), stop the loops, commit the
write-behind and close the stores; leaving `hosted` withdraws the instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from functools import partial

from prometheus_client import Gauge

from pushwire_protocol.errors import PushwireError
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle, settle_gc
from services.kit.pb import saver_pb2_grpc
from services.kit.rpc.grpcio import start_server
from services.saver.broadcasts import (
    BroadcastHot,
    BroadcastLog,
    MemoryBroadcastHot,
    RedisBroadcastHot,
)
from services.saver.config import SaverConfig
from services.saver.durable import MysqlDurableStore, SqliteDurableStore
from services.saver.hot import HotStore, MemoryHotStore, RedisHotStore
from services.saver.ids import IdGenerator
from services.saver.inbox import Inboxes, InboxStats, Limits
from services.saver.servicer import SaverServicer

log = logging.getLogger("pushwire.saver")

STATS = Gauge("pushwire_saver_inbox", "saver inbox counters (services/saver/inbox.py)",
              ["what"])
PENDING = Gauge("pushwire_pending_messages", "messages stored and not yet ACKed, dead-lettered,"
                " evicted or expired, per app, over every saver (each saver serves the same"
                " figure: aggregate with max, not sum)", ["app"])


def hot_store(config: SaverConfig) -> HotStore:
    if config.hot == "memory:":
        return MemoryHotStore()
    return RedisHotStore(config.hot, config.key_prefix, timeout_s=config.rpc_timeout_s)


def broadcast_hot(config: SaverConfig) -> BroadcastHot:
    if config.hot == "memory:":
        return MemoryBroadcastHot()
    return RedisBroadcastHot(config.hot, config.key_prefix, timeout_s=config.rpc_timeout_s)


def durable_store(config: SaverConfig, shard: int = 0) -> MysqlDurableStore | SqliteDurableStore:
    """The durable store; `shard` names this instance's rows of the pending figures."""
    if config.durable.startswith("sqlite:"):
        return SqliteDurableStore(config.durable.removeprefix("sqlite:"), shard=shard)
    return MysqlDurableStore(config.durable, timeout_s=config.rpc_timeout_s, shard=shard)


async def serve(config: SaverConfig, life: Lifecycle) -> None:
    """Run one saver instance until SIGTERM."""
    async with hosted("saver", config, life) as host:
        def limits(app: str) -> Limits:
            found = host.discovery.app(app)
            return Limits.of(found) if found is not None else Limits()

        node = await host.announce({})
        ids = IdGenerator(node)
        durable = durable_store(config, ids.node)
        hot = hot_store(config)
        host.need("hot store", partial(_answers, hot))
        inboxes = Inboxes(hot, durable, ids,
                          limits=limits, write_behind_max=config.write_behind_max,
                          write_behind_ms=config.write_behind_ms,
                          write_behind_queue=config.write_behind_queue,
                          loss_check_s=config.loss_check_s)
        await inboxes.start()
        broadcasts = BroadcastLog(broadcast_hot(config), durable, ids, limits=limits,
                                  loss_check_s=config.loss_check_s)
        await broadcasts.start()
        loops = life.spawn(inboxes.run(), "saver-inboxes")
        log_loops = life.spawn(broadcasts.run(), "saver-broadcasts")
        life.spawn(_export(inboxes.stats), "saver-metrics")
        life.spawn(_export_pending(inboxes, lambda: sorted(host.discovery.apps()),
                                   config.pending_every_s), "saver-pending-metrics")
        server, port = await start_server(
            config,
            [(saver_pb2_grpc.add_SaverServicer_to_server, SaverServicer(inboxes, broadcasts))],
            host.grpc_health)
        await host.publish({"grpc": f"{config.advertise}:{port}"})
        settle_gc()                 # docs/design-notes.md §11
        await life.stopping.wait()

        await server.stop(config.shutdown_grace_s)
        loops.cancel()
        log_loops.cancel()
        await asyncio.gather(loops, log_loops, return_exceptions=True)
        await broadcasts.close()
        await inboxes.close()


async def _answers(hot: HotStore) -> str | None:
    """Readiness check: the hot store answers (a read of its alive marker)."""
    try:
        await hot.lost()
    except PushwireError:
        return "unreachable"
    return None


async def _export_pending(inboxes: Inboxes, apps: Callable[[], list[str]],
                          every_s: float) -> None:
    """Serve each configured app's pending figure (a few rows' read per app, every
    `every_s`: saver's pending_every_s)."""
    shown: set[str] = set()
    while True:
        names = apps()
        try:
            counts = await inboxes.app_pending(names)
        except PushwireError as exc:
            log.warning("pending figures unavailable: %s", exc.detail or exc)
        else:
            for app in shown - set(names):
                PENDING.remove(app)
            for app, n in zip(names, counts, strict=True):
                PENDING.labels(app).set(n)
            shown = set(names)
        await asyncio.sleep(every_s)


async def _export(stats: InboxStats) -> None:
    while True:
        for name, value in dataclasses.asdict(stats).items():
            if isinstance(value, int):          # not the per-app totals (an RPC reads those)
                STATS.labels(name).set(value)
        await asyncio.sleep(1.0)
