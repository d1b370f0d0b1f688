"""Internal gRPC takes only cluster members (issue 10, docs/security.md).

A real cluster, then from this process, which holds no credential (or a wrong one), a call to
every method of every internal service, enumerated from the generated descriptors so a new
RPC or service is covered without touching this file: every one answers UNAUTHENTICATED, and
the cluster, whose services present the secret to each other, still delivers a push.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

import services.kit.pb
from pushwire_sdk.client import PushClient
from services.kit.rpc import grpcio, wire
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration


KINDS = ("center", "coordinator", "register", "room", "saver")
EVERYWHERE = {"profile"}        # served by every gRPC server (services/kit/rpc/profiling.py)


def internal_methods() -> list[tuple[str, MethodDescriptor]]:
    """(service kind, method) of every RPC in proto/: the kind is the proto file's name, or
    every kind for the services every server carries."""
    found = []
    for module in pkgutil.iter_modules(services.kit.pb.__path__):
        if not module.name.endswith("_pb2"):
            continue
        name = module.name.removesuffix("_pb2")
        descriptor = importlib.import_module(f"services.kit.pb.{module.name}").DESCRIPTOR
        for service in descriptor.services_by_name.values():
            kinds = KINDS if name in EVERYWHERE else (name,)
            found += [(kind, method) for kind in kinds for method in service.methods]
    return found


METHODS = internal_methods()


def test_every_service_has_methods_to_try() -> None:
    kinds = {kind for kind, _ in METHODS}
    assert kinds == set(KINDS)
    assert {kind for kind, m in METHODS if m.name == "Profile"} == set(KINDS)
    assert len(METHODS) >= 27


async def call(channel: grpc.aio.Channel, method: MethodDescriptor) -> grpc.StatusCode:
    """Call `method` with an empty request; the status it ends with."""
    request = message_factory.GetMessageClass(method.input_type)()
    reply = message_factory.GetMessageClass(method.output_type)
    rpc = channel.unary_unary(f"/{method.containing_service.full_name}/{method.name}",
                              request_serializer=type(request).SerializeToString,
                              response_deserializer=reply.FromString)
    try:
        await rpc(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_no_internal_method_answers_a_caller_without_the_cluster_secret(
        tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=False) as cluster:
        assert cluster.discovery is not None
        addresses = {kind: [i.addresses["grpc"] for i in cluster.discovery.instances(kind)]
                     for kind, _ in METHODS}
        assert all(addresses.values()), addresses
        outcomes: dict[str, set[grpc.StatusCode]] = {}
        for kind, method in METHODS:
            for address in addresses[kind]:
                async with grpc.aio.insecure_channel(address) as anonymous, \
                        grpcio.channel(address, "not-the-cluster-secret-000") as impostor:
                    codes = {await call(anonymous, method), await call(impostor, method)}
                outcomes[f"{kind} {method.name} @ {address}"] = codes
        assert {name: codes for name, codes in outcomes.items()
                if codes != {grpc.StatusCode.UNAUTHENTICATED}} == {}

        # The services present the secret to each other: a push still goes through.
        async with PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1")) as client:
            messages = client.messages()
            await cluster.wait_online("u1")
            status, body = await cluster.push("u1", "members only")
            assert status == 200 and body["online_sessions"] == 1, body
            message = await asyncio.wait_for(anext(messages), 30)
            assert message.data == b"members only"
            await client.ack(message)
            await messages.aclose()
        # And a member calling directly gets an answer, not a refusal.
        async with grpcio.channel(addresses["room"][0], cluster.secret) as member:
            [info] = [m for k, m in METHODS if k == "room" and m.name == "Info"]
            assert await call(member, info) is grpc.StatusCode.OK


async def refused_on_the_wire(host: str, port: int, first: bytes) -> bytes:
    """What the wire at host:port answers a connection that starts with `first`, up to its
    close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(first)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_no_wire_answers_a_caller_without_the_cluster_secret(tmp_path: Path) -> None:
    """The pipes' wire (docs/design-notes.md §18): its port is told only to members, and a
    connection that does not start with the secret gets a refusal and its close, whatever
    it sends; the services' own pipes use it."""
    async with Cluster(tmp_path, real=False) as cluster:
        assert cluster.discovery is not None
        refusal = wire.frame(0, wire.FAIL, wire.FAILED.pack(
            grpc.StatusCode.UNAUTHENTICATED.value[0], 0) + b"cluster credential required")
        store = "/pushwire.saver.Saver/Store"
        for kind in ("coordinator", "register", "room", "saver", "center"):
            for instance in cluster.discovery.instances(kind):
                address = instance.addresses["grpc"]
                async with grpc.aio.insecure_channel(address) as anonymous:
                    with pytest.raises(grpc.aio.AioRpcError) as asked:
                        await anonymous.unary_unary(wire.PORT_METHOD)(b"", timeout=10)
                    assert asked.value.code() is grpc.StatusCode.UNAUTHENTICATED
                async with grpcio.channel(address, cluster.secret) as member:
                    port = int.from_bytes(
                        await member.unary_unary(wire.PORT_METHOD)(b"", timeout=10), "big")
                assert port > 0, f"{kind} serves no wire"
                host = address.rsplit(":", 1)[0]
                call = wire.frame(1, wire.CALL, bytes((len(store),)) + store.encode())
                for first in (wire.frame(0, wire.HELLO, b"not-the-cluster-secret-000"),
                              wire.frame(0, wire.HELLO, b""), call):
                    assert await refused_on_the_wire(host, port, first + call) == refusal

        # Pushes cross center's pipes over the wire once it is open (the first goes over
        # gRPC while center opens it in the background), and arrive.
        async with PushClient(cluster.dispatcher, "demo", "u2", cluster.token("u2")) as client:
            messages = client.messages()
            await cluster.wait_online("u2")
            sent = 0
            async with asyncio.timeout(60):
                while not await cluster.metric("center-0", "pushwire_rpc_calls_total",
                                               method=store, transport="wire"):
                    status, body = await cluster.push("u2", f"m{sent}")
                    assert status == 200, body
                    message = await anext(messages)
                    assert message.data == f"m{sent}".encode()
                    await client.ack(message)
                    sent += 1
            status, body = await cluster.push("u2", "over the wire")
            assert status == 200 and body["online_sessions"] == 1, body
            message = await asyncio.wait_for(anext(messages), 30)
            assert message.data == b"over the wire"
            await messages.aclose()
