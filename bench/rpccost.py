"""CPU per internal RPC round trip: a unary call per batch vs messages on an open bidi stream.

    python -m bench.rpccost [-n 4000] [--repeat 3]

A real grpc.aio server in a child process on loopback (uvloop, the project's server options
and `Require` credential interceptor) and a client in this process (uvloop, the project's
channel with its `Attach` interceptor). Both ends' CPU (every thread) is read from
/proc around each phase; the figure is µs of CPU per round trip, client + server:
- unary:        one unary call carrying a 1-item batch (a saver AckRequest), one at a time;
- unary bare:   the same on a channel without interceptors, the credential passed as the
                call's metadata (what `Attach`, a grpc.aio client interceptor, costs);
- stream:       one request/reply message pair on an open bidi stream, one at a time;
- stream x16:   the same with 16 pairs in flight (replies matched by an 8-byte id).
The request and reply are the same protobuf bytes in every mode, so the difference is the
per-call cost of gRPC itself (issue #15, bench/RESULTS.md "stream: rpc per-call cost").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from bench.peers import cpu_s
from services.kit.pb import saver_pb2
from services.kit.rpc.credential import HEADER, SCHEME, Require
from services.kit.rpc.grpcio import SERVER_OPTIONS, channel

SECRET = "bench-rpccost-secret-0123456789abcdef"
UNARY = "/pushwire.bench.Cost/Call"
STREAM = "/pushwire.bench.Cost/Stream"
ID = struct.Struct("!Q")


def _request() -> bytes:
    item = saver_pb2.AckItem(app="bench", uid="u-000001", id=1234567890123,
                             session_id="s-1")
    return saver_pb2.AckRequest(items=[item]).SerializeToString()


async def _unary(request: bytes, _context: Any) -> bytes:
    saver_pb2.AckRequest.FromString(request)
    return saver_pb2.AckReply(removed=[True]).SerializeToString()


async def _stream(requests: AsyncIterator[bytes], context: Any) -> None:
    """Each frame: 8-byte id + request; answered (concurrently) by id + reply."""
    write_lock = asyncio.Lock()

    async def one(frame: bytes) -> None:
        reply = await _unary(frame[ID.size:], context)
        async with write_lock:
            await context.write(frame[:ID.size] + reply)

    tasks = set()
    async for frame in requests:
        task = asyncio.ensure_future(one(frame))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def serve() -> None:
    """The server end: prints its port, then serves until terminated."""
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[Require([SECRET])])
    handlers = {"Call": grpc.unary_unary_rpc_method_handler(_unary),
                "Stream": grpc.stream_stream_rpc_method_handler(_stream)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pushwire.bench.Cost", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


Phase = Callable[[grpc.aio.Channel, bytes, int], Awaitable[None]]


async def unary_phase(chan: grpc.aio.Channel, request: bytes, n: int) -> None:
    call = chan.unary_unary(UNARY)
    for _ in range(n):
        await call(request, timeout=5.0)


async def bare_unary_phase(chan: grpc.aio.Channel, request: bytes, n: int) -> None:
    """Unary with the credential passed as call metadata, on a channel without `Attach`."""
    call = chan.unary_unary(UNARY)
    metadata = ((HEADER, SCHEME + SECRET),)
    for _ in range(n):
        await call(request, timeout=5.0, metadata=metadata)


async def stream_phase(chan: grpc.aio.Channel, request: bytes, n: int,
                       in_flight: int = 1) -> None:
    call = chan.stream_stream(STREAM)(metadata=((HEADER, SCHEME + SECRET),))
    waiting: dict[int, asyncio.Future[bytes]] = {}

    async def read() -> None:
        async for frame in call:
            waiting.pop(ID.unpack_from(frame)[0]).set_result(frame)

    reader = asyncio.ensure_future(read())
    loop = asyncio.get_running_loop()
    next_id = 0
    lock = asyncio.Lock()               # grpc takes one write at a time per call

    async def worker(count: int) -> None:
        nonlocal next_id
        for _ in range(count):
            next_id += 1
            frame = ID.pack(next_id) + request
            fut = waiting[next_id] = loop.create_future()
            async with lock:
                await call.write(frame)
            await fut

    await asyncio.gather(*(worker(n // in_flight) for _ in range(in_flight)))
    await call.done_writing()
    await reader


async def stream16_phase(chan: grpc.aio.Channel, request: bytes, n: int) -> None:
    await stream_phase(chan, request, n, in_flight=16)


async def measure(server_pid: int, port: int, n: int, repeat: int) \
        -> dict[str, tuple[float, float]]:
    """{mode: (client µs, server µs)} per round trip, medians of `repeat` rounds in which
    the modes take turns (so a change in the machine's load hits them alike)."""
    request = _request()
    attached = channel(f"127.0.0.1:{port}", SECRET)
    bare = channel(f"127.0.0.1:{port}", None)
    phases: dict[str, tuple[grpc.aio.Channel, Phase]] = {
        "unary": (attached, unary_phase), "unary bare": (bare, bare_unary_phase),
        "stream": (bare, stream_phase), "stream x16": (bare, stream16_phase)}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in phases}
    for _ in range(repeat):
        for name, (chan, phase) in phases.items():
            await phase(chan, request, 200)        # warm up (and open the connection)
            c0, s0 = cpu_s(os.getpid()), cpu_s(server_pid)
            await phase(chan, request, n)
            c1, s1 = cpu_s(os.getpid()), cpu_s(server_pid)
            samples[name].append(((c1 - c0) / n * 1e6, (s1 - s0) / n * 1e6))
    await attached.close()
    await bare.close()
    return {name: min(runs, key=lambda run: abs(sum(run) - statistics.median(map(sum, runs))))
            for name, runs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=4000, help="round trips per phase")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of every mode (the figures are the median round's)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop
    if args.serve:
        uvloop.run(serve())
        return
    child = subprocess.Popen([sys.executable, "-m", "bench.rpccost", "--serve"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        result = uvloop.run(measure(child.pid, port, args.n, args.repeat))
    finally:
        child.terminate()
        child.wait()
    print(f"load average {os.getloadavg()[0]:.2f}; n = {args.n}, median of {args.repeat}; "
          "µs of CPU per round trip")
    unary = sum(result["unary"])
    print(f"{'mode':<12} {'client':>8} {'server':>8} {'total':>8} {'unary/this':>11}")
    for name, (client, server) in result.items():
        print(f"{name:<12} {client:8.0f} {server:8.0f} {client + server:8.0f} "
              f"{unary / (client + server):10.2f}x")


if __name__ == "__main__":
    main()
