"""`pushwire rooms` and `pushwire drain ROOM`: see the rooms, move a room's clients away.

    pushwire rooms                          # id, client address, load/capacity, IDC, state
    pushwire drain room-1 [--rate 500] [--keep-running] [--no-wait]

`drain` finds the room in discovery (the dev cluster's, PUSHWIRE_DISCOVERY or --discovery) and
calls its gRPC Drain method with the cluster secret (PUSHWIRE_CLUSTER_SECRET,
PUSHWIRE_CLUSTER_SECRET_FILE, else the dev cluster's): the room marks itself draining
(dispatchers stop offering it), sends each client RECONNECT to another room, paced, then
stops (docs/operations.md §3). The command prints the progress until the room is done, or
returns at once with --no-wait.
Exit codes: 0 done, 1 the room is unknown or did not finish in time, 2 bad usage, 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from cli import clients
from cli.ops import discovery_url
from pushwire_protocol.errors import ConfigError, PushwireError, Unavailable
from services.kit.config import client_secret
from services.kit.discovery import Discovery, Instance, connect
from services.kit.pb import room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import Channels, translate_call

POLL_S = 0.5


def add_parsers(subs: Any) -> None:
    p = subs.add_parser("rooms", help="list the room instances in discovery",
                        description="Print every room: id, client address, connections / "
                                    "capacity, IDC, and whether it is draining.")
    _discovery_flag(p)
    p.set_defaults(run=run_rooms)
    p = subs.add_parser("drain", help="move a room's clients to other rooms, then stop it",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("room", help="room instance id (see `pushwire rooms`)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="clients moved per second (default: the room's drain_rate_per_s)")
    p.add_argument("--keep-running", action="store_true",
                   help="move the clients but leave the process running (still draining)")
    p.add_argument("--no-wait", action="store_true", help="start the drain and return")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="give up waiting after this many seconds (default: %(default)s)")
    _discovery_flag(p)
    p.set_defaults(run=run_drain)


def _discovery_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--discovery", help="zk://... or file:... (default: PUSHWIRE_DISCOVERY, "
                                       "then the dev cluster)")


def run_rooms(args: argparse.Namespace) -> int:
    return _run("rooms", args, _rooms)


def run_drain(args: argparse.Namespace) -> int:
    if args.rate < 0 or args.timeout <= 0:
        return _fail("drain", "--rate must be >= 0 and --timeout > 0", 2)
    return _run("drain", args, _drain)


def _run(command: str, args: argparse.Namespace, action: Any) -> int:
    try:
        discovery = connect(discovery_url(args.discovery))
    except (clients.UsageError, ConfigError) as exc:
        return _fail(command, str(exc), 2)
    try:
        result: int = asyncio.run(_with(command, discovery, args, action))
    except KeyboardInterrupt:
        return 130
    return result


async def _with(command: str, discovery: Discovery, args: argparse.Namespace,
                action: Any) -> int:
    try:
        await discovery.start(("room",))
        code: int = await action(discovery, args)
        return code
    except PushwireError as exc:
        return _fail(command, exc.message, 1)
    finally:
        await discovery.close()


def describe(room: Instance) -> str:
    """One line of `pushwire rooms`."""
    capacity = str(room.capacity) if room.capacity else "-"
    state = "draining" if room.draining else "serving"
    return (f"{room.id:24} {room.addresses.get('ws', '-'):22} {room.load:>8}/{capacity:<8} "
            f"{room.idc:6} {state}")


async def _rooms(discovery: Discovery, _args: argparse.Namespace) -> int:
    for room in discovery.instances("room"):
        print(describe(room))
    return 0


async def _drain(discovery: Discovery, args: argparse.Namespace) -> int:
    room = next((r for r in discovery.instances("room") if r.id == args.room), None)
    if room is None or "grpc" not in room.addresses:
        return _fail("drain", f"no room {args.room!r} in discovery (see `pushwire rooms`)", 1)
    target = room.addresses["grpc"]
    channels = Channels(client_secret())
    try:
        stub = room_pb2_grpc.RoomStub(channels.get(target))
        request = room_pb2.DrainRequest(rate_per_s=args.rate, keep_running=args.keep_running)
        deadline = time.monotonic() + args.timeout
        while True:
            reply = await _call(target, stub, request, stopping=not args.keep_running)
            if reply is None or reply.done:
                return _report(args.room, reply)
            print(f"draining {args.room}: {reply.moved} moved, {reply.remaining} left",
                  flush=True)
            if args.no_wait:
                return 0
            if time.monotonic() > deadline:
                return _fail("drain", f"{args.room} not drained after {args.timeout}s", 1)
            await asyncio.sleep(POLL_S)
    finally:
        await channels.close()


async def _call(target: str, stub: room_pb2_grpc.RoomStub, request: room_pb2.DrainRequest,
                stopping: bool) -> room_pb2.DrainReply | None:
    """One Drain call; None when the room is gone and was meant to stop (it drained)."""
    try:
        reply: room_pb2.DrainReply = await translate_call(target, stub.Drain(request, timeout=10))
    except Unavailable:
        if stopping:
            return None
        raise
    return reply


def _report(room: str, reply: room_pb2.DrainReply | None) -> int:
    if reply is None:
        print(f"{room} drained and stopped")
    else:
        detail = f" ({reply.detail})" if reply.detail else ""
        print(f"{room} drained: {reply.moved} moved, {reply.remaining} left{detail}")
    return 0


def _fail(command: str, message: str, code: int) -> int:
    print(f"pushwire {command}: {message}", file=sys.stderr)
    return code
