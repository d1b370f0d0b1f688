"""services/kit/rpc/credential.py: the cluster credential, attached by `Channels` and checked
by `start_server`, against a real gRPC server on loopback (a generic method, no proto)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pushwire_protocol.errors import PushwireError
from services.kit import metrics
from services.kit.config import ServiceConfig
from services.kit.rpc.credential import Require
from services.kit.rpc.grpcio import Channels, channel, start_server, translate_call
from services.kit.rpc.health import GrpcHealth, serving

SECRET = "the-cluster-secret-0123456789"
METHOD = "/pushwire.test.Guarded/Touch"


class Guarded:
    """Counts the calls that reached it."""

    def __init__(self) -> None:
        self.touched = 0

    async def touch(self, request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        self.touched += 1
        return request

    def add_to(self, _impl: object, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "pushwire.test.Guarded", {"Touch": grpc.unary_unary_rpc_method_handler(self.touch)}),))


async def started(config: ServiceConfig) -> AsyncIterator[tuple[str, Guarded]]:
    guarded = Guarded()
    server, port = await start_server(config, [(guarded.add_to, guarded)])
    yield f"127.0.0.1:{port}", guarded
    await server.stop(None)


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[str, Guarded]]:
    async for pair in started(ServiceConfig(cluster_secret=SECRET)):
        yield pair


async def call(target: str, secret: str | None, method: str = METHOD,
               metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    channels = Channels(secret)
    try:
        rpc = channels.get(target).unary_unary(method)
        reply: bytes = await translate_call(target, rpc(b"hi", timeout=5, metadata=metadata))
        return reply
    finally:
        await channels.close()


async def test_a_cluster_member_gets_through(guarded: tuple[str, Guarded]) -> None:
    target, impl = guarded
    assert await call(target, SECRET) == b"hi"
    assert impl.touched == 1


@pytest.mark.parametrize("secret", [None, "another-cluster-secret-0123", SECRET + "x",
                                    SECRET[:-1]], ids=["none", "other", "longer", "shorter"])
async def test_a_caller_without_the_secret_is_refused_before_the_servicer(
        guarded: tuple[str, Guarded], secret: str | None) -> None:
    target, impl = guarded
    refused = metrics.RPC_UNAUTHENTICATED._value
    before = refused.get()
    with pytest.raises(PushwireError, match="refused the cluster credential"):
        await call(target, secret)
    assert impl.touched == 0
    assert refused.get() - before == 1


@pytest.mark.parametrize("value", [SECRET, f"Basic {SECRET}", f"bearer {SECRET}", "Bearer ",
                                   f"Bearer  {SECRET}"])
async def test_only_the_exact_bearer_value_counts(guarded: tuple[str, Guarded],
                                                  value: str) -> None:
    with pytest.raises(PushwireError, match="refused"):
        await call(guarded[0], None, metadata=(("authorization", value),))
    assert await call(guarded[0], None, metadata=(("authorization", f"Bearer {SECRET}"),)) \
        == b"hi"


async def test_unknown_methods_are_refused_too(guarded: tuple[str, Guarded]) -> None:
    """Without the secret a caller learns nothing, not even which methods exist."""
    with pytest.raises(PushwireError, match="refused"):
        await call(guarded[0], None, method="/pushwire.test.Guarded/Nope")
    with pytest.raises(PushwireError, match="unimplemented"):
        await call(guarded[0], SECRET, method="/pushwire.test.Guarded/Nope")


async def test_refusals_are_logged_at_most_once_per_period(
        guarded: tuple[str, Guarded], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pushwire.rpc"):
        for _ in range(5):
            with pytest.raises(PushwireError):
                await call(guarded[0], None)
    lines = [r.getMessage() for r in caplog.records if "cluster credential" in r.getMessage()]
    assert len(lines) == 1 and "/pushwire.test.Guarded/Touch" in lines[0]


async def test_an_insecure_cluster_takes_any_caller() -> None:
    async for target, impl in started(ServiceConfig(insecure_rpc=True)):
        assert await call(target, None) == b"hi"
        assert impl.touched == 1


def test_require_compares_the_whole_value() -> None:
    require = Require([SECRET])
    assert require.allows((("authorization", f"Bearer {SECRET}"),))
    assert require.allows((("x-other", "1"), ("authorization", f"Bearer {SECRET}")))
    assert require.allows((("authorization", f"Bearer {SECRET}".encode()),))
    for metadata in [None, (), (("authorization", f"Bearer {SECRET} "),),
                     (("x-authorization", f"Bearer {SECRET}"),)]:
        assert not require.allows(metadata)


async def test_during_a_rotation_both_secrets_get_through(tmp_path: Path) -> None:
    """docs/security.md §4: the file lists the new secret and the old one; a server accepts
    both, a client presents the first."""
    path = tmp_path / "secret"
    path.write_text(f"{SECRET}-new\n{SECRET}\n")
    config = ServiceConfig(cluster_secret_file=str(path))
    assert config.rpc_secret() == f"{SECRET}-new"
    async for target, impl in started(config):
        assert await call(target, SECRET) == b"hi"
        assert await call(target, f"{SECRET}-new") == b"hi"
        with pytest.raises(PushwireError, match="refused"):
            await call(target, f"{SECRET}-old")
        assert impl.touched == 2


async def test_the_health_check_alone_is_open_to_a_caller_without_the_secret() -> None:
    """Probes send no metadata: Check answers them; Watch (a held stream) does not."""
    health = GrpcHealth("pushwire.test.Guarded")
    await health.set(True)
    guarded = Guarded()
    server, port = await start_server(ServiceConfig(cluster_secret=SECRET),
                                       [(guarded.add_to, guarded)], health)
    target = f"127.0.0.1:{port}"
    try:
        async with channel(target, None) as anonymous:
            assert await serving(anonymous, 5)
            assert await serving(anonymous, 5, "pushwire.test.Guarded")
            watch = health_pb2_grpc.HealthStub(anonymous).Watch(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await watch.read()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(PushwireError, match="refused the cluster credential"):
            await call(target, None)
        await health.set(False)
        async with channel(target, SECRET) as member:
            assert not await serving(member, 5)
    finally:
        await server.stop(None)
