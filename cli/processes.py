"""Service processes started by a parent: `pushwire dev`, the bench and the test harness.

One place for what all three need: start `python -m services.<kind>.main` so that it dies
with its parent (PR_SET_PDEATHSIG: a killed supervisor, bench or test run leaves nothing
behind), give them all one cluster secret, stop a set of them entry points first, find a free
port, and ask a dispatcher whether the cluster routes clients yet.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import aiohttp

from pushwire_protocol.errors import PushwireError
from services.kit import config as kitconfig
from services.kit.config import new_secret, read_secrets
from services.kit.lifecycle import die_with_parent
from services.room.config import RoomConfig
from services.room.workers import STOP_MARGIN_S, stop_budget_s

# Stop order: entry points first, state holders last.
STOP_ORDER = ("dispatcher", "center", "room", "coordinator", "saver", "register")


def service_command(kind: str, workers: int = 1) -> list[str]:
    """The command line of one service process: `python -m services.<kind>.main`, or for a
    room with `workers` > 1 the supervisor of that many workers on one port (services/room/
    workers.py, what `pushwire room --workers N` runs)."""
    if kind == "room" and workers > 1:
        return [sys.executable, "-m", "services.room.workers", str(workers)]
    return [sys.executable, "-m", f"services.{kind}.main"]


def spawn_service(kind: str, env: Mapping[str, str], log: Path | None = None,
                  workers: int = 1) -> subprocess.Popen[bytes]:
    """Start one service process (`service_command`) with `env` on top of ours; output to
    `log` (appended) or inherited."""
    command = service_command(kind, workers)
    full_env = {**os.environ, **env}
    if log is None:
        return subprocess.Popen(command, env=full_env, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
    with log.open("ab") as out:
        return subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


SECRET_FILE = "cluster-secret"
ADMIN_KEY_FILE = "admin-key"


def cluster_secret(home: Path) -> Path:
    """The file holding the cluster secret of the cluster kept in `home`, made (owner-only,
    random) if missing: every service gets it through `secret_env`, tools read it."""
    return _made_once(home / SECRET_FILE)


def admin_key(home: Path) -> str:
    """The admin key of center in the cluster kept in `home` (made like the cluster secret;
    center gets the file through `admin_env`)."""
    return read_secrets(_made_once(home / ADMIN_KEY_FILE))[0]


def admin_env(home: Path) -> dict[str, str]:
    """Environment giving center the admin key file of `home`."""
    return {"PUSHWIRE_CENTER_ADMIN_KEYS_FILE": str(_made_once(home / ADMIN_KEY_FILE)),
            "PUSHWIRE_CENTER_ADMIN_KEYS": ""}


def _made_once(path: Path) -> Path:
    """`path`, holding a random secret line (owner-only) made if it was missing."""
    home = path.parent
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):    # made meanwhile by another process
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(new_secret() + "\n")
    return path


def secret_of(home: Path) -> str:
    """The cluster secret of `home`, for calling the services' gRPC from the harness itself."""
    return read_secrets(cluster_secret(home))[0]


def secret_env(home: Path) -> dict[str, str]:
    """Environment giving a service the cluster secret of `home` (overriding any inherited)."""
    return {"PUSHWIRE_CLUSTER_SECRET_FILE": str(cluster_secret(home)),
            "PUSHWIRE_CLUSTER_SECRET": "", "PUSHWIRE_INSECURE_RPC": "0"}


def stop_in_order(procs: Iterable[tuple[str, subprocess.Popen[bytes]]],
                  grace_s: float = 10.0, graces: Mapping[str, float] | None = None) -> None:
    """SIGTERM the (kind, process) pairs kind by kind in STOP_ORDER, waiting for each kind;
    SIGKILL what outlives its grace: `graces[kind]` where given, else `grace_s` (a room
    drains for up to its `drain_timeout_s`: give it `room_stop_budget_s`)."""
    pairs = list(procs)
    for kind in STOP_ORDER:
        group = [p for k, p in pairs if k == kind]
        for proc in group:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + (graces or {}).get(kind, grace_s)
        for proc in group:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def room_stop_budget_s(env: Mapping[str, str] | None = None) -> float:
    """How long to give a room (or a room's worker supervisor) that was sent SIGTERM, with
    the room settings of `env` over ours (the defaults where they do not load): the room's
    own stop budget (services/room/workers.py) and a margin for its supervisor's SIGKILLs."""
    try:
        cfg = kitconfig.load(RoomConfig, "room", {**os.environ, **(env or {})})
    except PushwireError:
        cfg = RoomConfig()
    return stop_budget_s(cfg) + STOP_MARGIN_S


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
FIXED_PORTS_FROM = 10_000


_handed_out: set[int] = set()    # every port free_port returned in this process


def free_port(host: str = "127.0.0.1") -> int:
    """A port free to listen on now, for a server started a moment later.

    Chosen below the kernel's ephemeral range when there is room: a port of that range can
    be taken meanwhile by the local end of any outgoing connection (a test run opens
    thousands), and the server then fails with "address already in use". Never the same port
    twice in one process: a port handed out is free until its server binds it, so a second
    call before then could return it again (two services of one cluster on one port)."""
    low = ephemeral_low()
    for _ in range(1000):
        port = random.randrange(FIXED_PORTS_FROM, low) if low > FIXED_PORTS_FROM else 0
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            found = int(s.getsockname()[1])
        if found not in _handed_out:
            _handed_out.add(found)
            return found
    raise OSError(f"no free port on {host}")


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


async def routes(dispatcher: str, app: str, tls: ssl.SSLContext | None = None) -> bool:
    """True when the dispatcher answers a route for `app` (the cluster takes clients); on
    https its certificate is checked with `tls` (default: the system's CAs)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(
                f"{dispatcher}/v1/route", params={"app": app, "uid": "probe"},
                timeout=aiohttp.ClientTimeout(total=2), ssl=tls or True) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
