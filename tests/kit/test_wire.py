"""services/kit/rpc/wire.py: the pipes' batch calls over the wire, against a real server
started by `start_server` (gRPC and its wire) on loopback, with a generated servicer."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import uvloop
from prometheus_client import REGISTRY

from pushwire_protocol.errors import Disconnected, NotFound, PushwireError, Unavailable
from services.kit.config import ServiceConfig
from services.kit.pb import common_pb2, register_pb2, register_pb2_grpc
from services.kit.rpc import wire
from services.kit.rpc.grpcio import (
    Channels,
    RpcServer,
    rpc_error,
    sender,
    servicer,
    start_server,
)

SECRET = "wire-test-secret-0123456789"
LOOKUP = "/pushwire.register.Register/Lookup"


class Users(register_pb2_grpc.RegisterServicer):
    """Lookup answers one session per uid, in room "room-<uid>"; some uids misbehave."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.held = asyncio.Event()

    @servicer
    async def Lookup(self, request: register_pb2.LookupRequest,
                     context: grpc.aio.ServicerContext) -> register_pb2.LookupReply:
        self.calls += 1
        uids = [user.uid for user in request.users]
        if "missing" in uids:
            raise NotFound("no such user")
        if "crash" in uids:
            raise RuntimeError("secret internals at 10.0.0.7")
        if "hold" in uids:
            self.held.set()
            await self.release.wait()
        if "slow" in uids:
            await asyncio.sleep(30)
        if "busy" in uids:
            time.sleep(0.5)  # noqa: ASYNC251 (holds the loop, as a server short of CPU does)
        return register_pb2.LookupReply(results=[
            register_pb2.SessionList(sessions=[common_pb2.Session(uid=uid, room=f"room-{uid}")])
            for uid in uids])


Send = Callable[[list[Any], float], Awaitable[list[Any]]]


def lookup(channels: Channels, target: str, run_late: bool = False) -> Send:
    return sender(channels, register_pb2_grpc.RegisterStub, "Lookup",
                  lambda uids: register_pb2.LookupRequest(
                      users=[common_pb2.UserRef(app="demo", uid=uid) for uid in uids]),
                  lambda reply, _n: [[s.room for s in r.sessions] for r in reply.results],
                  run_late=run_late)(target)


def expired() -> float:
    return REGISTRY.get_sample_value("pushwire_rpc_expired_calls_total",
                                     {"method": LOOKUP}) or 0.0


def calls(transport: str) -> float:
    return REGISTRY.get_sample_value("pushwire_rpc_calls_total",
                                     {"method": LOOKUP, "transport": transport}) or 0.0


async def wire_open(channels: Channels, target: str) -> None:
    """Until the background open of the target's wire has ended (it asks the port over
    gRPC, then connects), and it is open."""
    assert channels.wires is not None
    assert await channels.wires.opened(target) is not None


async def opened_lookup(channels: Channels, target: str, run_late: bool = False) -> Send:
    """`lookup` once its wire is open: a first call (over gRPC) starts the open."""
    send = lookup(channels, target, run_late)
    await send(["warm"], 5.0)
    await asyncio.wait_for(wire_open(channels, target), 5.0)
    return send


@pytest.fixture
async def served() -> AsyncIterator[tuple[RpcServer, str, Users]]:
    users = Users()
    server, port = await start_server(
        ServiceConfig(cluster_secret=SECRET),
        [(register_pb2_grpc.add_RegisterServicer_to_server, users)])
    yield server, f"127.0.0.1:{port}", users
    users.release.set()
    await server.stop(None)


@pytest.fixture
async def channels() -> AsyncIterator[Channels]:
    channels = Channels(SECRET, wire=True)
    yield channels
    await channels.close()


async def test_batch_calls_go_over_the_wire_once_it_is_open(
        served: tuple[RpcServer, str, Users], channels: Channels) -> None:
    _, target, users = served
    send = lookup(channels, target)
    grpc_before, wire_before = calls("grpc"), calls("wire")
    assert await send(["a", "b"], 5.0) == [["room-a"], ["room-b"]]   # over gRPC: not open yet
    assert calls("grpc") == grpc_before + 1
    await asyncio.wait_for(wire_open(channels, target), 5.0)
    answers = await asyncio.gather(*(send([f"u{i}"], 5.0) for i in range(50)))
    assert answers == [[[f"room-u{i}"]] for i in range(50)]    # each reply to its own call
    assert calls("wire") == wire_before + 50 and calls("grpc") == grpc_before + 1
    assert users.calls == 51


async def test_errors_over_the_wire_are_the_errors_over_grpc(
        served: tuple[RpcServer, str, Users], channels: Channels) -> None:
    _, target, _ = served
    plain = Channels(SECRET)
    try:
        over_wire, over_grpc = await opened_lookup(channels, target), lookup(plain, target)
        for uid, kind, text in [("missing", NotFound, "no such user"),
                                ("crash", PushwireError, "a cluster service failed")]:
            seen = []
            for send in (over_wire, over_grpc):
                with pytest.raises(PushwireError) as failed:
                    await send([uid], 5.0)
                seen.append((type(failed.value), failed.value.message))
            assert seen[0] == seen[1] == (kind, text)     # no exception text, no address
        assert calls("wire") >= 2
    finally:
        await plain.close()


async def test_a_call_past_its_deadline_is_unavailable_and_the_wire_stays_open(
        served: tuple[RpcServer, str, Users], channels: Channels) -> None:
    _, target, _ = served
    send = await opened_lookup(channels, target)
    opened = channels.wire(target)
    with pytest.raises(Unavailable):
        await send(["slow"], 0.2)
    assert channels.wire(target) is opened
    assert await send(["after"], 5.0) == [["room-after"]]


async def test_a_call_whose_caller_gave_up_before_the_server_got_to_it_is_not_run(
        served: tuple[RpcServer, str, Users], channels: Channels,
        caplog: pytest.LogCaptureFixture) -> None:
    _, target, users = served
    send = await opened_lookup(channels, target)
    before, expired_before = users.calls, expired()
    busy = asyncio.create_task(send(["busy"], 5.0))     # both leave in one write
    late = asyncio.create_task(send(["late"], 0.2))
    assert await busy == [["room-busy"]]
    with pytest.raises(Unavailable):
        await late
    assert users.calls == before + 1            # "late" never reached the servicer
    assert expired() == expired_before + 1
    assert "their callers had stopped waiting" in caplog.text
    assert LOOKUP in caplog.text
    assert await send(["after"], 5.0) == [["room-after"]]     # and the wire serves on


async def test_a_sender_that_runs_late_has_its_late_calls_run(
        served: tuple[RpcServer, str, Users], channels: Channels) -> None:
    """A delivery is still worth making late: its sender says so (`run_late`)."""
    _, target, users = served
    send = await opened_lookup(channels, target, run_late=True)
    before, expired_before = users.calls, expired()
    busy = asyncio.create_task(send(["busy"], 5.0))
    late = asyncio.create_task(send(["late"], 0.2))
    assert await busy == [["room-busy"]]
    # Its caller's loop was held up with the server's: it may read the late reply
    # before it gives up (WireClient._due), or not. What counts is that it was run.
    await asyncio.gather(late, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert users.calls == before + 2 and expired() == expired_before


async def test_a_client_told_by_an_older_server_sends_plain_calls_it_runs_late(
        served: tuple[RpcServer, str, Users]) -> None:
    """A server before TIMED_CALL answers the port's 2 bytes: its clients send CALL, which
    carries no deadline, so a late call is run as before."""
    _, target, users = served
    plain = Channels(SECRET)

    async def older_answer(asked: str) -> bytes:
        return (await plain._wire_port(asked))[:2]

    wires = wire.Wires(SECRET, older_answer, rpc_error)
    try:
        client = await wires.opened(target)
        assert client is not None
        before, expired_before = users.calls, expired()
        request = register_pb2.LookupRequest(users=[common_pb2.UserRef(app="demo", uid="busy")])
        late = register_pb2.LookupRequest(users=[common_pb2.UserRef(app="demo", uid="late")])
        busy_call = asyncio.create_task(client.call(LOOKUP.encode(),
                                                    request.SerializeToString(), 5.0))
        late_call = asyncio.create_task(client.call(LOOKUP.encode(),
                                                    late.SerializeToString(), 0.2))
        await busy_call
        await asyncio.gather(late_call, return_exceptions=True)    # as above
        await asyncio.sleep(0.05)
        assert users.calls == before + 2 and expired() == expired_before
    finally:
        await wires.close()
        await plain.close()


async def test_the_port_answer_tells_what_the_server_reads_only_to_who_asks(
        served: tuple[RpcServer, str, Users]) -> None:
    server, target, _ = served
    assert server.wire is not None
    ask = Channels(SECRET)
    try:
        port = ask.get(target).unary_unary(wire.PORT_METHOD)
        assert await port(b"") == server.wire.port.to_bytes(2, "big")     # as before
        assert await port(wire.ASK_FEATURES) == \
            server.wire.port.to_bytes(2, "big") + bytes((wire.READS_TIMED,))
    finally:
        await ask.close()


async def test_a_timed_call_is_judged_by_the_delay_of_its_connection_not_by_its_clock(
        served: tuple[RpcServer, str, Users]) -> None:
    """The client's clock is any offset from the server's: only how much later than the
    quickest call of its connection a call arrives counts against its budget."""
    server, _, users = served
    assert server.wire is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.wire.port)
    clock = 123_456_789_000_000        # µs: nothing like the server's monotonic clock

    def timed(call_id: int, sent_us: int, budget_ms: int, uid: str) -> bytes:
        request = register_pb2.LookupRequest(users=[common_pb2.UserRef(app="demo", uid=uid)])
        return wire.frame(call_id, wire.TIMED_CALL,
                          wire.TIMED.pack(sent_us, budget_ms) + bytes((len(LOOKUP),))
                          + LOOKUP.encode() + request.SerializeToString())

    async def answer() -> tuple[int, int]:
        head = await asyncio.wait_for(reader.readexactly(wire.HEAD.size), 5.0)
        size, call_id, kind = wire.HEAD.unpack(head)
        await reader.readexactly(size - 5)
        return call_id, kind

    try:
        before = users.calls
        writer.write(wire.frame(0, wire.HELLO, SECRET.encode()) + timed(1, clock, 1000, "a"))
        assert await answer() == (1, wire.OK)
        writer.write(timed(2, clock - 3_000_000, 1000, "b"))     # sent 3 s before: too late
        assert await answer() == (2, wire.FAIL)
        writer.write(timed(3, clock - 3_000_000, 5000, "c"))     # within a 5 s budget
        assert await answer() == (3, wire.OK)
        assert users.calls == before + 2
    finally:
        writer.close()


def test_lateness_never_counts_more_than_the_wait_beyond_the_quickest_trip() -> None:
    lateness = wire.Lateness()
    offset = -987_654_321          # the client's clock against the server's, µs
    for sent, trip in [(1_000, 300), (2_000, 80), (3_000, 2_500)]:
        lateness.arrived(sent, sent + offset + trip)
    # a call sent at 5,000 that the server gets to at 5,000 + offset + 1,080 µs
    assert lateness.waited_us(5_000, 5_000 + offset + 1_080) == 1_000
    # a window later, the minimum of the last window still holds...
    later = int(wire.LATENESS_WINDOW_S * 1e6) + 10_000
    lateness.arrived(later, later + offset + 400)
    assert lateness.waited_us(later, later + offset + 400) == 320
    # ...and two windows later it is forgotten (a drifting clock cannot pin it)
    latest = 2 * later + 10_000
    lateness.arrived(latest, latest + offset + 400)
    assert lateness.waited_us(latest, latest + offset + 400) == 0


def test_a_reply_that_came_in_time_counts_though_the_loop_was_held_up_past_the_deadline(
        ) -> None:
    """uvloop runs the timers that fell due during a stall before it reads its sockets: a
    reply that arrived within the deadline, while the caller's loop was held up (short of
    CPU), must still be read before the call gives up. The server runs in a thread, on its
    own loop, so that it answers while the caller's loop is held."""
    ready: dict[str, Any] = {}
    up = threading.Event()
    users = Users()

    def held_up() -> None:
        """Until the server has run the call, then long enough for its reply to be written
        and for the 0.2 s deadline to pass."""
        deadline = time.monotonic() + 10
        while users.calls < 2 and time.monotonic() < deadline:    # "warm", then "in-time"
            time.sleep(0.005)
        time.sleep(0.3)

    async def serve() -> None:
        server, port = await start_server(
            ServiceConfig(cluster_secret=SECRET),
            [(register_pb2_grpc.add_RegisterServicer_to_server, users)])
        stop = asyncio.Event()
        ready.update(target=f"127.0.0.1:{port}", loop=asyncio.get_running_loop(), stop=stop)
        up.set()
        await stop.wait()
        await server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()

    async def held_up_caller() -> list[Any]:
        channels = Channels(SECRET, wire=True)
        try:
            send = await opened_lookup(channels, ready["target"])
            loop = asyncio.get_running_loop()
            call = asyncio.create_task(send(["in-time"], 0.2))
            await asyncio.sleep(0)      # the call is written; its flush is next in line,
            loop.call_soon(held_up)     # and right behind it the loop is held up
            return await call
        finally:
            await channels.close()

    assert up.wait(10)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            assert runner.run(held_up_caller()) == [["room-in-time"]]
    finally:
        ready["loop"].call_soon_threadsafe(ready["stop"].set)
        thread.join(10)


async def held_call(served: tuple[RpcServer, str, Users], channels: Channels) \
        -> tuple[Send, asyncio.Task[list[Any]], wire.WireServer]:
    """An open wire's lookup, a call on it that the servicer holds, and the server's wire."""
    server, target, users = served
    send = await opened_lookup(channels, target)
    in_flight = asyncio.create_task(send(["hold"], 5.0))
    await asyncio.wait_for(users.held.wait(), 5.0)
    assert server.wire is not None
    return send, in_flight, server.wire


async def test_a_cut_wire_fails_its_calls_in_flight_and_the_next_go_over_grpc(
        served: tuple[RpcServer, str, Users], channels: Channels) -> None:
    _, target, users = served
    send, in_flight, wire_server = await held_call(served, channels)
    await wire_server.stop(0)       # closes the listener and every connection
    with pytest.raises(Disconnected):     # what an idempotent pipe re-sends
        await in_flight
    grpc_before = calls("grpc")
    users.release.set()
    assert await send(["next"], 5.0) == [["room-next"]]
    assert calls("grpc") == grpc_before + 1 and channels.wire(target) is None


async def test_a_stop_with_grace_lets_the_calls_in_flight_answer(
        served: tuple[RpcServer, str, Users], channels: Channels) -> None:
    users = served[2]
    _, in_flight, wire_server = await held_call(served, channels)
    stopping = asyncio.create_task(wire_server.stop(5.0))
    await asyncio.sleep(0.05)
    assert not stopping.done()          # it waits for the call
    users.release.set()
    assert await in_flight == [["room-hold"]]
    await stopping


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5.0)     # b"..." up to EOF


async def test_a_connection_without_the_secret_is_refused_and_closed(
        served: tuple[RpcServer, str, Users]) -> None:
    server, _, users = served
    assert server.wire is not None
    refused_before = REGISTRY.get_sample_value("pushwire_rpc_unauthenticated_calls_total") or 0
    for hello in [wire.frame(0, wire.HELLO, b"wrong-secret"),
                  wire.frame(1, wire.CALL, bytes((len(LOOKUP),)) + LOOKUP.encode())]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.wire.port)
        writer.write(hello)
        answer = await read_until_closed(reader)
        writer.close()
        _, call_id, kind = wire.HEAD.unpack_from(answer)
        status, ours = wire.FAILED.unpack_from(answer, wire.HEAD.size)
        assert (call_id, kind, ours) == (0, wire.FAIL, 0)
        assert status == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert answer[wire.HEAD.size + wire.FAILED.size:] == b"cluster credential required"
    assert users.calls == 0
    assert REGISTRY.get_sample_value("pushwire_rpc_unauthenticated_calls_total") == \
        refused_before + 2


async def test_an_unknown_method_fails_and_an_oversize_frame_closes_the_connection(
        served: tuple[RpcServer, str, Users]) -> None:
    server, _, _ = served
    assert server.wire is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.wire.port)
    path = b"/pushwire.register.Register/Nope"
    writer.write(wire.frame(0, wire.HELLO, SECRET.encode())
                 + wire.frame(7, wire.CALL, bytes((len(path),)) + path))
    head = await asyncio.wait_for(reader.readexactly(wire.HEAD.size + wire.FAILED.size), 5.0)
    _, call_id, kind = wire.HEAD.unpack_from(head)
    status, _ = wire.FAILED.unpack_from(head, wire.HEAD.size)
    assert (call_id, kind, status) == (7, wire.FAIL, grpc.StatusCode.UNIMPLEMENTED.value[0])
    await reader.readexactly(len(b"no such method"))
    writer.write(wire.HEAD.pack(wire.FRAME_MAX + 1, 8, wire.CALL))
    assert await read_until_closed(reader) == b""
    writer.close()


async def test_with_rpc_wire_off_the_server_has_no_wire_and_calls_go_over_grpc() -> None:
    users = Users()
    server, port = await start_server(
        ServiceConfig(cluster_secret=SECRET, rpc_wire=False),
        [(register_pb2_grpc.add_RegisterServicer_to_server, users)])
    target = f"127.0.0.1:{port}"
    channels = Channels(SECRET, wire=True)
    try:
        assert server.wire is None
        assert await channels._wire_port(target) == b"\x00\x00"
        send = lookup(channels, target)
        grpc_before = calls("grpc")
        for _ in range(3):
            assert await send(["a"], 5.0) == [["room-a"]]
            assert channels.wires is not None
            assert await channels.wires.opened(target) is None     # port 0: no wire
        assert calls("grpc") == grpc_before + 3
    finally:
        await channels.close()
        await server.stop(None)


def test_frames_are_split_however_the_bytes_arrive() -> None:
    frames = wire._Frames()
    sent = [wire.frame(i, wire.OK, bytes(i * 100)) for i in range(1, 6)]
    stream = b"".join(sent)
    got: list[tuple[int, int, int]] = []
    for at in range(0, len(stream), 7):          # 7-byte pieces: headers split too
        assert frames.feed(stream[at:at + 7], lambda i, k, b: got.append((i, k, len(b))))
    assert got == [(i, wire.OK, i * 100) for i in range(1, 6)]
    assert not frames.feed(wire.HEAD.pack(wire.FRAME_MAX + 1, 1, wire.OK), lambda *_: None)


def test_keepalive_options_are_set_on_a_wire_socket() -> None:
    with socket.socket() as sock:
        wire._tune(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == \
            wire.USER_TIMEOUT_MS
