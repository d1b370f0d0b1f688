"""Service processes started by a parent: `pushwire dev`, the bench and the test harness.

One place for what all three need: start `python -m services.<kind>.main` so that it dies
with its parent (PR_SET_PDEATHSIG: a killed supervisor, bench or test run leaves nothing
behind), give them all one cluster secret, stop a set of them entry points first, find a free
port, and ask a dispatcher whether the cluster routes clients yet.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import resource
import secrets
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import aiohttp

from services.kit.config import read_secrets

# Stop order: entry points first, state holders last.
STOP_ORDER = ("dispatcher", "center", "room", "coordinator", "saver", "register")


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """preexec_fn: own process group (a terminal's Ctrl-C reaches only the parent), SIGKILL
    when the parent dies, and the soft open-files limit raised to the hard one."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn_service(kind: str, env: Mapping[str, str], log: Path | None = None) \
        -> subprocess.Popen[bytes]:
    """Start one service process with `env` on top of ours; output to `log` (appended) or
    inherited."""
    command = [sys.executable, "-m", f"services.{kind}.main"]
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
                out.write(secrets.token_urlsafe(32) + "\n")
    return path


def secret_of(home: Path) -> str:
    """The cluster secret of `home`, for calling the services' gRPC from the harness itself."""
    return read_secrets(cluster_secret(home))[0]


def secret_env(home: Path) -> dict[str, str]:
    """Environment giving a service the cluster secret of `home` (overriding any inherited)."""
    return {"PUSHWIRE_CLUSTER_SECRET_FILE": str(cluster_secret(home)),
            "PUSHWIRE_CLUSTER_SECRET": "", "PUSHWIRE_INSECURE_RPC": "0"}


def stop_in_order(procs: Iterable[tuple[str, subprocess.Popen[bytes]]],
                  grace_s: float = 10.0) -> None:
    """SIGTERM the (kind, process) pairs kind by kind in STOP_ORDER, waiting for each kind;
    SIGKILL what outlives `grace_s`."""
    pairs = list(procs)
    for kind in STOP_ORDER:
        group = [p for k, p in pairs if k == kind]
        for proc in group:
            if proc.poll() is None:
                proc.terminate()
        for proc in group:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
