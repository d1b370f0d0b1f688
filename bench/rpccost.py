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
- stream x16:   the same with 16 pairs in flight (replies matched by an 8-byte id);
- wire:         the same unary call over the wire (services/kit/rpc/wire.py), one at a time;
- wire x16:     the same with 16 calls in flight.
The request and reply are the same protobuf bytes in every mode, so the difference is the
per-call cost of gRPC itself (issue #15, bench/RESULTS.md "stream: rpc per-call cost").

    python -m bench.rpccost --variants [NAME ...] [-n 1000] [--repeat 5]

compares configurations of mode (a) instead (`VARIANTS`; none named: all): each variant
runs its own server and client processes (the event loop of each end, GRPC_POLL_STRATEGY,
channel and server options, where the credential is checked, where protobuf is parsed, another
grpcio from a `pip install --target` directory named by RPCCOST_OTHER_GRPCIO); the variants
take turns within each round. "base again" repeats base: its difference is the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from bench.peers import cpu_fine_s
from services.kit.pb import saver_pb2
from services.kit.rpc import wire
from services.kit.rpc.credential import HEADER, SCHEME, Attach, Require
from services.kit.rpc.grpcio import CLIENT_OPTIONS, SERVER_OPTIONS, channel, rpc_error

SECRET = "bench-rpccost-secret-0123456789abcdef"
UNARY = "/pushwire.bench.Cost/Call"
STREAM = "/pushwire.bench.Cost/Stream"
ID = struct.Struct("!Q")
T = TypeVar("T")


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
    methods = wire.Methods()
    methods.add_registered_method_handlers(
        "pushwire.bench.Cost", {"Call": grpc.unary_unary_rpc_method_handler(_unary)})
    require = Require([SECRET])
    wired = wire.WireServer(methods, lambda secret: require.allows([(HEADER, SCHEME + secret)]),
                            lambda _peer: None)
    print(port, await wired.start("127.0.0.1", 0), flush=True)
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


async def wire_phase(client: wire.WireClient, request: bytes, n: int,
                     in_flight: int = 1) -> None:
    path = UNARY.encode()

    async def worker(count: int) -> None:
        for _ in range(count):
            await client.call(path, request, 5.0)

    await asyncio.gather(*(worker(n // in_flight) for _ in range(in_flight)))


async def wire16_phase(client: wire.WireClient, request: bytes, n: int) -> None:
    await wire_phase(client, request, n, in_flight=16)


async def measure(server_pid: int, port: int, wire_port: int, n: int, repeat: int) \
        -> dict[str, tuple[float, float]]:
    """{mode: (client µs, server µs)} per round trip, medians of `repeat` rounds in which
    the modes take turns (so a change in the machine's load hits them alike)."""
    request = _request()
    attached = channel(f"127.0.0.1:{port}", SECRET)
    bare = channel(f"127.0.0.1:{port}", None)
    _, wired = await asyncio.get_running_loop().create_connection(
        lambda: wire.WireClient("bench", SECRET, rpc_error), "127.0.0.1", wire_port)
    phases: dict[str, tuple[Any, Callable[[Any, bytes, int], Awaitable[None]]]] = {
        "unary": (attached, unary_phase), "unary bare": (bare, bare_unary_phase),
        "stream": (bare, stream_phase), "stream x16": (bare, stream16_phase),
        "wire": (wired, wire_phase), "wire x16": (wired, wire16_phase)}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in phases}
    for _ in range(repeat):
        for name, (chan, phase) in phases.items():
            await phase(chan, request, 200)        # warm up (and open the connection)
            c0, s0 = cpu_fine_s(os.getpid()), cpu_fine_s(server_pid)
            await phase(chan, request, n)
            c1, s1 = cpu_fine_s(os.getpid()), cpu_fine_s(server_pid)
            samples[name].append(((c1 - c0) / n * 1e6, (s1 - s0) / n * 1e6))
    await attached.close()
    await bare.close()
    wired.close()
    return {name: _median_run(runs) for name, runs in samples.items()}


def _median_run(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (client, server) round whose total is nearest the median (the earlier on a tie)."""
    middle = statistics.median(map(sum, runs))
    return min(runs, key=lambda run: abs(sum(run) - middle))


# --- configuration variants (`--variants`): one server and one client process per variant,
# so the event loop and gRPC core's environment (GRPC_POLL_STRATEGY) differ per variant.

@dataclass(frozen=True)
class Variant:
    """How both ends of the unary mode (a) are configured; the defaults are the services'."""
    client_loop: str = "uvloop"
    server_loop: str = "uvloop"
    env: tuple[tuple[str, str], ...] = ()
    client_options: tuple[tuple[str, int | str], ...] = ()
    server_options: tuple[tuple[str, int | str], ...] = ()
    no_compression: bool = False            # grpc.Compression.NoCompression on both ends
    max_rpcs: int | None = None             # the server's maximum_concurrent_rpcs
    credential: str = "interceptor"         # "interceptor" (Require), "handler", "none"
    protobuf_in_grpc: bool = False          # grpc (de)serializes instead of the handler
    pythonpath: str = ""                    # another grpcio (a pip --target directory)


def _both(name: str, value: int | str) -> dict[str, Any]:
    return {"client_options": ((name, value),), "server_options": ((name, value),)}


VARIANTS: dict[str, Variant] = {
    "base": Variant(),
    "base again": Variant(),       # the same as base: the noise between two identical ends
    "client asyncio": Variant(client_loop="asyncio"),
    "server asyncio": Variant(server_loop="asyncio"),
    "both asyncio": Variant(client_loop="asyncio", server_loop="asyncio"),
    "poll epoll1": Variant(env=(("GRPC_POLL_STRATEGY", "epoll1"),)),
    "poll poll": Variant(env=(("GRPC_POLL_STRATEGY", "poll"),)),
    "target latency": Variant(**_both("grpc.optimization_target", "latency")),
    "target throughput": Variant(**_both("grpc.optimization_target", "throughput")),
    "retries 0": Variant(client_options=(("grpc.enable_retries", 0),)),
    "http proxy 0": Variant(client_options=(("grpc.enable_http_proxy", 0),)),
    "compression none": Variant(no_compression=True),
    "so_reuseport 0": Variant(server_options=(("grpc.so_reuseport", 0),)),
    "max streams 100": Variant(server_options=(("grpc.max_concurrent_streams", 100),)),
    "bdp probe 0": Variant(**_both("grpc.http2.bdp_probe", 0)),
    "write buffer 0": Variant(**_both("grpc.http2.write_buffer_size", 0)),
    "write buffer 1M": Variant(**_both("grpc.http2.write_buffer_size", 1 << 20)),
    "max rpcs 1000": Variant(max_rpcs=1000),
    "protobuf in grpc": Variant(protobuf_in_grpc=True),
    "credential in handler": Variant(credential="handler"),
    "no credential": Variant(credential="none"),
    "grpcio 1.85.3": Variant(pythonpath=os.environ.get("RPCCOST_OTHER_GRPCIO", "")),
    # The ones that came out below base at least once, together.
    "grpcio 1.85.3 + proxy 0 + streams 100": Variant(
        pythonpath=os.environ.get("RPCCOST_OTHER_GRPCIO", ""),
        client_options=(("grpc.enable_http_proxy", 0),),
        server_options=(("grpc.max_concurrent_streams", 100),)),
}


def _variant(spec: str) -> Variant:
    fields = json.loads(spec)
    for key in ("env", "client_options", "server_options"):
        fields[key] = tuple(tuple(pair) for pair in fields[key])
    return Variant(**fields)


def _run(loop: str, main: Coroutine[Any, Any, T]) -> T:
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main)
    return asyncio.run(main)


async def serve_variant(variant: Variant) -> None:
    """The server end of a variant: prints its port, then serves until terminated."""
    require = Require([SECRET])

    async def checked(request: bytes, context: Any) -> bytes:
        if not require.allows(context.invocation_metadata()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "refused")
        return await _unary(request, context)

    async def parsed(request: saver_pb2.AckRequest, _context: Any) -> saver_pb2.AckReply:
        return saver_pb2.AckReply(removed=[True])

    if variant.protobuf_in_grpc:
        handler = grpc.unary_unary_rpc_method_handler(
            parsed, request_deserializer=saver_pb2.AckRequest.FromString,
            response_serializer=saver_pb2.AckReply.SerializeToString)
    else:
        handler = grpc.unary_unary_rpc_method_handler(
            checked if variant.credential == "handler" else _unary)
    server = grpc.aio.server(
        options=[*SERVER_OPTIONS, *variant.server_options],
        interceptors=[require] if variant.credential == "interceptor" else None,
        maximum_concurrent_rpcs=variant.max_rpcs,
        compression=grpc.Compression.NoCompression if variant.no_compression else None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pushwire.bench.Cost", {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def client_variant(variant: Variant, port: int, server_pid: int) -> None:
    """The client end: for each `n` read from stdin, n round trips after a warm-up; prints
    `client_us server_us` per round trip."""
    chan = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[*CLIENT_OPTIONS, *variant.client_options],
        interceptors=[Attach(SECRET)] if variant.credential != "none" else None,
        compression=grpc.Compression.NoCompression if variant.no_compression else None)
    request = _request()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        n = int(line)
        await unary_phase(chan, request, 200)
        c0, s0 = cpu_fine_s(os.getpid()), cpu_fine_s(server_pid)
        await unary_phase(chan, request, n)
        c1, s1 = cpu_fine_s(os.getpid()), cpu_fine_s(server_pid)
        print(f"{(c1 - c0) / n * 1e6:.1f} {(s1 - s0) / n * 1e6:.1f}", flush=True)
    await chan.close()


def variants(names: list[str], n: int, repeat: int) -> None:
    """Rounds in which the variants take turns; per variant the median round (by total)."""
    ends = {}
    for name in names:
        variant = VARIANTS[name]
        if name.startswith("grpcio") and not variant.pythonpath:
            print(f"{name}: skipped (set RPCCOST_OTHER_GRPCIO to a pip --target directory)")
            continue
        env = {**os.environ, **dict(variant.env)}
        if variant.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([variant.pythonpath, os.getcwd()])
        spec = json.dumps(asdict(variant))
        server = subprocess.Popen([sys.executable, "-m", "bench.rpccost", "--serve",
                                   "--spec", spec], stdout=subprocess.PIPE, text=True, env=env)
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        client = subprocess.Popen([sys.executable, "-m", "bench.rpccost", "--client", port,
                                   str(server.pid), "--spec", spec], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        ends[name] = (server, client)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ends}
    try:
        for _ in range(repeat):
            for name, (_server, client) in ends.items():
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(f"{n}\n")
                client.stdin.flush()
                line = client.stdout.readline()
                if not line:
                    raise SystemExit(f"variant {name!r}: its client ended (see above)")
                c, s = map(float, line.split())
                samples[name].append((c, s))
    finally:
        for server, client in ends.values():
            assert client.stdin is not None
            client.stdin.close()
            client.wait(timeout=30)
            server.terminate()
            server.wait()
    print(f"load average {os.getloadavg()[0]:.2f}; n = {n}, median of {repeat}; "
          "µs of CPU per unary round trip")
    base = None
    print(f"{'variant':<22} {'client':>8} {'server':>8} {'total':>8} {'vs base':>8}")
    for name, runs in samples.items():
        client_us, server_us = _median_run(runs)
        total = client_us + server_us
        base = base if base is not None else total
        change = f"{(total - base) / base * 100:+7.1f}%" if base else "n/a"
        print(f"{name:<22} {client_us:8.0f} {server_us:8.0f} {total:8.0f} {change:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=4000, help="round trips per phase")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of every mode (the figures are the median round's)")
    parser.add_argument("--variants", nargs="*", metavar="NAME",
                        help="compare configurations of the unary mode instead (none named: "
                             f"all): {', '.join(VARIANTS)}")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spec is not None:
        variant = _variant(args.spec)
        if args.serve:
            _run(variant.server_loop, serve_variant(variant))
        else:
            _run(variant.client_loop, client_variant(variant, *args.client))
        return
    if args.variants is not None:
        variants(args.variants or list(VARIANTS), args.n, args.repeat)
        return
    import uvloop
    if args.serve:
        uvloop.run(serve())
        return
    child = subprocess.Popen([sys.executable, "-m", "bench.rpccost", "--serve"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port, wire_port = map(int, child.stdout.readline().split())
        result = uvloop.run(measure(child.pid, port, wire_port, args.n, args.repeat))
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
