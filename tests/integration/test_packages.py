"""The two distributions as users install them (issue #14 item 5): the server wheel puts one
name in site-packages and runs a cluster from anywhere; the SDK wheel installs without the
server's dependencies, and a client made with it receives a push from that cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_dev import free_offset

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"grpcio", "kazoo", "redis", "uvloop", "aiomysql", "pymysql", "aiosqlite",
               "pyjwt", "prometheus-client", "cryptography"}

CLIENT = """
import asyncio, json, sys
from pushwire_sdk import PushClient

async def main(url, token):
    async with PushClient(url, "demo", "u1", token, connect_timeout_s=30) as client:
        print("connected", flush=True)
        async for message in client.messages():
            print(json.dumps({"id": str(message.id), "data": message.data.decode()}), flush=True)
            await client.ack(message)
            return

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _run(*cmd: str | Path, env: dict[str, str] | None = None,
         cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False,
                          timeout=300, env=env, cwd=cwd)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing into this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    return {**env, **extra}


def _venv(path: Path) -> Path:
    result = _run(sys.executable, "-m", "venv", path)
    assert result.returncode == 0, result.stderr
    return path / "bin"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both wheels, built from a copy of the checkout's files (tracked or not ignored): an
    in-tree build would leave build/ behind, whose stale files later wheels would ship."""
    source = tmp_path_factory.mktemp("source")
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                  cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        src, dest = ROOT / name, source / name
        if not src.exists() and not src.is_symlink():
            continue                      # deleted in the work tree, not yet committed
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest, follow_symlinks=False)
    out = tmp_path_factory.mktemp("wheels")
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out,
                 source / "sdk" / "python", source, cwd=out)
    assert built.returncode == 0, built.stdout + built.stderr
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"pushwire", "pushwire_sdk"}, found
    return found


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


def test_each_wheel_puts_only_its_own_names_in_site_packages(wheels: dict[str, Path]) -> None:
    assert top_level(wheels["pushwire"]) == {"pushwire", "pushwire-0.1.0.dist-info"}
    assert top_level(wheels["pushwire_sdk"]) == {
        "pushwire_sdk", "pushwire_protocol", "pushwire_sdk-0.1.0.dist-info"}
    with zipfile.ZipFile(wheels["pushwire"]) as archive:
        names = set(archive.namelist())
        metadata = archive.read("pushwire-0.1.0.dist-info/METADATA").decode()
    assert "pushwire/services/room/main.py" in names and "pushwire/cli/launch.py" in names
    assert not any(n.startswith(("pushwire/tests", "tests/")) for n in names)
    assert "pushwire-0.1.0.dist-info/licenses/LICENSE" in names
    assert "Requires-Dist: protobuf<8,>=7.35.1" in metadata
    assert "Requires-Dist: uvloop>=0.19; sys_platform != \"win32\"" in metadata
    assert "Requires-Dist: pushwire-sdk==0.1.0" in metadata


@dataclass
class Server:
    bin: Path                 # the installed server's venv/bin
    env: dict[str, str]
    banner: dict[str, str]    # what `pushwire dev` printed: dispatcher, center, api key


@pytest.fixture(scope="module")
def server(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`pushwire dev` run by the installed server wheel, from a folder outside the checkout.
    Its dependencies come from this test run's environment (a .pth line naming its
    site-packages), so nothing is downloaded; the packages under test are the wheels'."""
    home = tmp_path_factory.mktemp("server")
    bin_dir = _venv(home / "venv")
    installed = _run(bin_dir / "pip", "install", "-q", "--no-deps", wheels["pushwire_sdk"],
                     wheels["pushwire"])
    assert installed.returncode == 0, installed.stderr
    site = _run(bin_dir / "python", "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = _clean_env(PUSHWIRE_HOME=str(home))
    offset = free_offset(home)
    log = home / "dev.log"
    with log.open("w") as out:       # a file: the cluster's logs never fill a pipe
        dev = subprocess.Popen([bin_dir / "pushwire", "dev", "--port-offset", str(offset)],
                               cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops the cluster" not in log.read_text() and dev.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert "pushwire dev is up" in text, text
        yield Server(bin_dir, env, banner(text.splitlines()))
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)


def banner(lines: list[str]) -> dict[str, str]:
    words = {line.split()[0]: line.split() for line in lines if line.startswith("  ")}
    return {"dispatcher": words["dispatcher"][1].removesuffix("/v1/route"),
            "center": words["center"][1].removesuffix("/v1/apps/demo/push"),
            "api_key": words["demo"][words["demo"].index("key") + 1],
            "console": words["console"][1]}


def test_the_installed_server_runs_from_anywhere_and_hides_its_packages(server: Server) -> None:
    bin_dir, env = server.bin, server.env
    version = _run(bin_dir / "pushwire", "--version", env=env, cwd="/")
    assert version.returncode == 0 and version.stdout.strip() == "pushwire 0.1.0"
    for name in ("services", "cli", "bench", "sdk"):
        probe = _run(bin_dir / "python", "-c", f"import {name}", env=env, cwd="/")
        assert "ModuleNotFoundError" in probe.stderr, (name, probe.stderr)
    with urllib.request.urlopen(server.banner["console"], timeout=10) as response:
        assert b"<title>pushwire console</title>" in response.read()    # the wheel's files


def test_the_sdk_installs_alone_and_its_client_receives_a_push(
        wheels: dict[str, Path], server: Server, tmp_path: Path) -> None:
    server_bin, env = server.bin, server.env
    bin_dir = _venv(tmp_path / "venv")
    installed = _run(bin_dir / "pip", "install", "-q", wheels["pushwire_sdk"])
    assert installed.returncode == 0, installed.stderr
    listed = _run(bin_dir / "pip", "list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"pushwire-sdk", "websockets", "aiohttp", "protobuf"} <= names
    assert not names & SERVER_ONLY, names & SERVER_ONLY
    assert "pushwire" not in names

    minted = _run(server_bin / "pushwire", "token", "--app", "demo", "--uid", "u1", env=env)
    assert minted.returncode == 0, minted.stderr
    client = subprocess.Popen([bin_dir / "python", "-c", CLIENT, server.banner["dispatcher"],
                               minted.stdout.strip()], cwd=tmp_path, env=_clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected", client.stderr
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:   # until center sees the session (register)
            pushed = _run(server_bin / "pushwire", "push", "--app", "demo", "--uid", "u1",
                          "--data", "from the wheel", env=env)
            assert pushed.returncode == 0, pushed.stderr
            if json.loads(pushed.stdout)["online_sessions"]:
                break
            time.sleep(0.2)
        out, err = client.communicate(timeout=30)
        received = json.loads(out)
        assert received["data"] == "from the wheel" and int(received["id"]) > 2**53, err
        assert client.returncode == 0, err
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    deadline = time.monotonic() + 10
    while (state := message_state(server, received["id"])) != "acked" and \
            time.monotonic() < deadline:   # the client's ACK reaches saver
        time.sleep(0.2)
    assert state == "acked"


def message_state(server: Server, message_id: str) -> str:
    request = urllib.request.Request(
        f"{server.banner['center']}/v1/apps/demo/messages/{message_id}",
        headers={"Authorization": f"Bearer {server.banner['api_key']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        state: str = json.load(response)["state"]
    return state
