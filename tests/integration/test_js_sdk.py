"""The JavaScript SDK, @pushwire/client (sdk/js, issue #12): its own test suite (`npm test`:
unit tests and tests against a real `pushwire dev` cluster it starts), and on a
`pushwire dev --tls` cluster its examples as users run them: the web page in a real headless
Chromium over wss:// with a cross-origin route request, a push arriving and being acknowledged
(message status `acked`), and `examples/listen.mjs --ca` printing a push.

All need `npm ci` in sdk/js (scripts/test runs it); the browser test also Debian's chromium and
`npm ci` in tests/browser. Skipped without them outside CI only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pushwire_sdk.trust import client_context
from services.kit.http import start_site
from services.kit.tls import server_context
from tests.integration.test_dev import free_offset, pushwire
from tests.integration.test_tls import BROWSER, CHROMIUM, banner_of, spki_hash

pytestmark = pytest.mark.integration

SDK = Path(__file__).parent.parent.parent / "sdk" / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")
READY = NODE is not None and NPM is not None and (SDK / "node_modules" / "typescript").exists()
needs_sdk = pytest.mark.skipif(not READY and os.environ.get("CI") != "true",
                               reason="needs node, npm and `npm ci` in sdk/js "
                                      "(scripts/test does it)")


def env_without_cluster_urls(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PUSHWIRE_DISPATCHER_URL", "PUSHWIRE_CENTER_URL", "PUSHWIRE_API_KEY")}
    if home is not None:
        env["PUSHWIRE_HOME"] = str(home)
    return env


@needs_sdk
def test_npm_test_of_the_js_sdk_passes() -> None:
    assert READY, "no node/npm or no `npm ci` in sdk/js"
    done = subprocess.run([str(NPM), "test"], cwd=SDK, env=env_without_cluster_urls(),
                          capture_output=True, text=True, timeout=600)
    summary = [line for line in done.stdout.splitlines() if line.startswith("# ")]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "# fail 0" in summary and not any(line == "# pass 0" for line in summary), summary


@dataclass(frozen=True)
class TlsDev:
    """A `pushwire dev --tls` cluster: its home, the environment of its CLI, cluster.json."""

    home: Path
    env: dict[str, str]
    info: dict[str, Any]

    @property
    def ca(self) -> Path:
        return self.home / "dev" / "tls" / "ca.pem"

    def push(self, uid: str, data: str) -> str:
        """`pushwire push`; the message id (a string)."""
        done = subprocess.run(pushwire("push", "--app", "demo", "--uid", uid, "--data", data),
                              env=self.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        message_id = json.loads(done.stdout)["messages"][0]["id"]
        assert isinstance(message_id, str)
        return message_id

    def broadcast(self, data: str) -> str:
        """`pushwire broadcast --no-wait`; the broadcast's id (a string)."""
        done = subprocess.run(pushwire("broadcast", "--app", "demo", "--data", data, "--no-wait"),
                              env=self.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        broadcast_id = json.loads(done.stdout)["id"]
        assert isinstance(broadcast_id, str)
        return broadcast_id

    def token(self, uid: str) -> str:
        return subprocess.run(pushwire("token", "--app", "demo", "--uid", uid), env=self.env,
                              capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    def state_when_settled(self, message_id: str) -> str:
        return asyncio.run(state_when_settled(self.info, message_id, self.ca))


@pytest.fixture(scope="module")
def tls_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDev]:
    home = tmp_path_factory.mktemp("tls-dev")
    env = env_without_cluster_urls(home)
    dev = subprocess.Popen(pushwire("dev", "--tls", "--port-offset", str(free_offset(home)),
                                    "--ready-timeout", "90"),
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = banner_of(dev)
        assert "pushwire dev is up" in banner, banner
        info = json.loads((home / "dev" / "cluster.json").read_text())
        assert info["dispatcher"].startswith("https://")
        yield TlsDev(home, env, info)
    finally:
        dev.send_signal(signal.SIGINT)
        dev.communicate(timeout=30)


@needs_sdk
@pytest.mark.skipif((not (BROWSER / "node_modules" / "playwright-core").exists()
                     or CHROMIUM is None) and os.environ.get("CI") != "true",
                    reason="needs Debian's chromium and `npm ci` in tests/browser "
                           "(scripts/test does it)")
def test_the_example_page_gets_a_push_over_wss_in_chromium_and_acks_it(
        tls_dev: TlsDev, tmp_path: Path) -> None:
    assert READY and CHROMIUM is not None, "no chromium, node or `npm ci`"
    bundle = tmp_path / "pushwire.min.js"
    built = subprocess.run([str(NODE), "scripts/bundle.mjs", str(bundle)], cwd=SDK,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    # both replayed when the page connects: the stored push, then the broadcast
    broadcast_id = tls_dev.broadcast("to every page")
    message_id = tls_dev.push("browser", "to the page")
    result = asyncio.run(open_example_page(tls_dev.home, bundle, tls_dev.info["dispatcher"],
                                           tls_dev.token("browser")))
    assert result["unicast"] == {"id": message_id, "data": "to the page"}, result
    assert result["broadcast"] == {"id": broadcast_id, "data": "to every page"}, result
    assert result["cursor"] == broadcast_id, result      # kept in the page's localStorage
    assert str(result["endpoint"]).startswith("wss://127.0.0.1:"), result
    assert tls_dev.state_when_settled(message_id) == "acked"


@needs_sdk
def test_listen_example_on_wss_trusts_the_ca_it_is_given(tls_dev: TlsDev) -> None:
    assert READY, "no node/npm or no `npm ci` in sdk/js"
    listen = subprocess.Popen(
        [str(NODE), "examples/listen.mjs", "--dispatcher", tls_dev.info["dispatcher"],
         "--app", "demo", "--uid", "node", "--token", tls_dev.token("node"),
         "--ca", str(tls_dev.ca)],
        cwd=SDK, env=env_without_cluster_urls(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    # --ca starts the script again as a child (NODE_EXTRA_CA_CERTS): kill the whole group
    watchdog = threading.Timer(90, os.killpg, (listen.pid, signal.SIGKILL))   # bounds the reads
    watchdog.start()
    try:
        assert listen.stderr is not None and listen.stdout is not None
        opened = next((line for line in listen.stderr if line.startswith("open ")), "")
        assert " on wss://127.0.0.1:" in opened, opened
        message_id = tls_dev.push("node", "to node")
        lines = (json.loads(line) for line in listen.stdout)    # broadcasts replayed come first
        printed = next((line for line in lines if line["kind"] == "unicast"), None)
        assert printed == {"id": message_id, "app": "demo", "kind": "unicast", "data": "to node"}
        assert tls_dev.state_when_settled(message_id) == "acked"
        listen.send_signal(signal.SIGINT)
        assert listen.wait(30) == 0
    finally:
        watchdog.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(listen.pid, signal.SIGKILL)
        listen.communicate(timeout=30)


async def open_example_page(home: Path, bundle: Path, dispatcher: str,
                            token: str) -> dict[str, object]:
    """Serve sdk/js/examples/web with the bundle over https on an origin of its own (so the
    route request is cross-origin) and let Chromium run it until it reports the push."""
    files = {"/": SDK / "examples" / "web" / "index.html",
             "/app.js": SDK / "examples" / "web" / "app.js", "/pushwire.min.js": bundle}

    async def serve(request: web.Request) -> web.StreamResponse:
        path = files.get(request.path)
        return web.FileResponse(path) if path else web.Response(status=404)

    site = web.Application()
    site.router.add_get("/{name:.*}", serve)
    tls = home / "dev" / "tls"
    runner, port = await start_site(site, "127.0.0.1", 0,
                                    server_context(tls / "server.pem", tls / "server-key.pem"))
    query = urllib.parse.urlencode({"dispatcher": dispatcher, "app": "demo", "uid": "browser",
                                    "token": token, "connect": "", "once": "unicast,broadcast"})
    args = json.dumps({"url": f"https://127.0.0.1:{port}/?{query}", "executable": CHROMIUM,
                       "spki": spki_hash(tls / "server.pem"), "timeoutMs": 60000})
    try:
        node = await asyncio.create_subprocess_exec(
            str(NODE), str(BROWSER / "open_page.mjs"), args, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(node.communicate(), 120)
        except TimeoutError:
            node.kill()
            await node.wait()
            raise
    finally:
        await runner.cleanup()
    assert node.returncode == 0, err.decode()
    result = json.loads(out)
    assert isinstance(result, dict) and "error" not in result, result
    return result


async def state_when_settled(cluster: dict[str, Any], message_id: str, ca: Path) -> str:
    """The message's state once it is no longer `stored` (polled, 30 s at most)."""
    apps = cluster["apps"]
    assert isinstance(apps, dict)
    headers = {"Authorization": f"Bearer {apps['demo']['api_key']}"}
    url = f"{cluster['center']}/v1/apps/demo/messages/{message_id}"
    deadline = time.monotonic() + 30
    connector = aiohttp.TCPConnector(ssl=client_context(ca))
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        while True:
            async with http.get(url) as reply:
                assert reply.status == 200, await reply.text()
                state = str((await reply.json())["state"])
            if state != "stored" or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.1)
