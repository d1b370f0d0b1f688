"""The peers pushwire is measured against: nats-server and mosquitto, started for the run.

    async with Peer.nats(workdir) as nats:        # or Peer.mosquitto(workdir)
        nats.ws          # "127.0.0.1:PORT", the WebSocket listener the load generator uses
        nats.rss_kib()   # the server process' resident memory

Both come from Debian (packages `nats-server`, `mosquitto`; installed with apt-get when
missing) and run with configs written here: loopback only, on free ports (never the machine's
own 4222/1883), WebSocket listener on, no TLS, no compression, no persistence. Each is stopped
by its PID when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cli.processes import free_port
from services.kit.lifecycle import die_with_parent

PACKAGES = {"nats-server": "nats-server", "mosquitto": "mosquitto"}
BINARIES = {"nats-server": ("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"),
            "mosquitto": ("mosquitto", "/usr/sbin/mosquitto")}


def find_binary(name: str) -> str | None:
    for candidate in BINARIES[name]:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def ensure_installed(name: str) -> str:
    """The path of the server binary, installing its Debian package first if needed."""
    found = find_binary(name)
    if found:
        return found
    package = PACKAGES[name]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    # The package's own service may start on the default port; ours never uses it.
    found = find_binary(name)
    if not found:
        raise RuntimeError(f"{package} installed but {name} not found")
    return found


def nats_config(port: int, ws_port: int) -> str:
    return f"""# pushwire bench: loopback only, WebSocket without TLS or compression
listen: "127.0.0.1:{port}"
max_connections: 200000
max_payload: 1048576
ping_interval: "2m"
write_deadline: "10s"
websocket {{
  listen: "127.0.0.1:{ws_port}"
  no_tls: true
  compression: false
}}
"""


def mosquitto_config(port: int, ws_port: int) -> str:
    return f"""# pushwire bench: loopback only, MQTT over WebSocket, nothing kept on disk
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
max_queued_messages 1000000
max_inflight_messages 0
set_tcp_nodelay true
listener {port} 127.0.0.1
listener {ws_port} 127.0.0.1
protocol websockets
"""


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_fine_s(pid: int) -> float:
    """CPU seconds (all threads, ended ones too) a process has used so far, to the
    nanosecond, where `cpu_s` counts clock ticks (10 ms): its process CPU-time clock
    (clock_getcpuclockid(3); Linux encodes it from the pid, CPUCLOCK_SCHED)."""
    return time.clock_gettime(((~pid) << 3) | 2)


@dataclass
class Peer:
    """One peer server process."""

    name: str                   # "nats-server" | "mosquitto"
    workdir: Path
    port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def nats(cls, workdir: Path) -> Peer:
        return cls("nats-server", workdir)

    @classmethod
    def mosquitto(cls, workdir: Path) -> Peer:
        return cls("mosquitto", workdir)

    @property
    def ws(self) -> str:
        return f"127.0.0.1:{self.ws_port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def version(self) -> str:
        binary = ensure_installed(self.name)
        flag = "--version" if self.name == "nats-server" else "-h"
        out = subprocess.run([binary, flag], capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"

    async def __aenter__(self) -> Peer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.stop()

    async def start(self, timeout_s: float = 15.0) -> None:
        binary = ensure_installed(self.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.name == "nats-server":
            conf = self.workdir / "nats.conf"
            conf.write_text(nats_config(self.port, self.ws_port))
            command = [binary, "-c", str(conf)]
        else:
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(mosquitto_config(self.port, self.ws_port))
            command = [binary, "-c", str(conf)]
        self._spawn(command)
        await self._wait_listening(timeout_s)

    def _spawn(self, command: list[str]) -> None:
        with (self.workdir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

    async def _wait_listening(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                _r, writer = await asyncio.open_connection("127.0.0.1", self.ws_port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"{self.name} not listening: {self.log_tail()}") from None
                await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / f"{self.name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
