"""A real cluster at the edge (issue 11): a room behind a load balancer speaking the PROXY
protocol, an app that admits browser pages of its origins, a dispatcher answering browsers'
CORS preflights, and a real headless Chromium on a page of another origin. The "balancer" is
this test writing a real PROXY header from 127.0.0.5 (the room trusts 127.0.0.5/32);
127.0.0.2, 127.0.0.3 and the browser (127.0.0.1) are untrusted peers: direct clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import shutil
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from cli.processes import free_port
from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit.discovery import AppConfig
from services.kit.proxy import V2_SIGNATURE
from tests.integration.cluster import Cluster
from tests.integration.rawclient import ABNORMAL, Raw, auth_of, dial, dropped, endpoint_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PAGE = "https://app.example"
BALANCER = "127.0.0.5"
BROWSER_PAGE = f"http://127.0.0.1:{free_port()}"        # the origin of the app's web client
APP = AppConfig(id="edge", secrets=("edge-secret",), api_keys=("edge-key",),
                deny_cidrs=("198.51.100.66/32",), allowed_origins=(PAGE, BROWSER_PAGE))
ROOM = {"PUSHWIRE_ROOM_TRUSTED_PROXIES": f"{BALANCER}/32",
        "PUSHWIRE_ROOM_DENY_CIDRS": "203.0.113.0/24", "PUSHWIRE_ROOM_PROXY_TIMEOUT_S": "1",
        "PUSHWIRE_ROOM_IP_MAX_CONNECTIONS": "3"}
DISPATCHER = {"PUSHWIRE_DISPATCHER_CORS_ORIGINS": f"{PAGE},{BROWSER_PAGE}"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("edge"), real=True, app=APP,
                       proc_env={"room-0": ROOM, "dispatcher": DISPATCHER}) as c:
        yield c


OPENED: list[Raw] = []


@pytest.fixture(autouse=True)
def drop_clients() -> Iterator[None]:
    """Every raw client a test opened is dropped when it ends, whatever happened."""
    with dropped(OPENED):
        yield


def v1(client: str) -> bytes:
    return f"PROXY TCP4 {client} 127.0.0.1 40000 8200\r\n".encode()


def v2(client: str) -> bytes:
    block = (ipaddress.ip_address(client).packed + ipaddress.ip_address("127.0.0.1").packed
             + struct.pack("!HH", 40000, 8200))
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block


async def client(cluster: Cluster, uid: str, *, source: str, preface: bytes = b"",
                 origin: str = "") -> Raw:
    host, port = endpoint_port(f"ws://{cluster.room('room-0').addresses['ws']}/")
    raw = await dial(host, port, auth_of(APP.id, "edge-secret", uid), source=source,
                     preface=preface, origin=origin)
    OPENED.append(raw)
    return raw


def last_error(c: Raw) -> wire_pb2.Error:
    return [wire_pb2.Error.FromString(p.body) for p in c.of(Op.ERROR)][-1]


async def served(c: Raw) -> wire_pb2.AuthReply:
    return await asyncio.wait_for(asyncio.shield(c.replied), 10)


async def metric(cluster: Cluster, family: str, reason: str) -> float:
    return await cluster.metric("room-0", family, reason=reason)


async def test_the_client_address_in_a_real_proxy_header_is_what_the_lists_see(
        cluster: Cluster) -> None:
    denied_before = await metric(cluster, "pushwire_room_refused_total", "denied")
    # The room's deny list, at WebSocket open, by the address in a v1 header.
    denied = await client(cluster, "p1", source=BALANCER, preface=v1("203.0.113.9"))
    assert await denied.wait_closed() == 4107
    # The app's deny list, at AUTH, by the address in a v2 header.
    app_denied = await client(cluster, "p2", source=BALANCER, preface=v2("198.51.100.66"))
    assert await app_denied.wait_closed() == 4107
    assert last_error(app_denied).message == "address not allowed for this app"
    # The balancer's own address would pass both lists; so does this client.
    for header in (v1("198.51.100.10"), v2("198.51.100.11")):
        welcome = await client(cluster, "p3", source=BALANCER, preface=header)
        await served(welcome)
        welcome.abort()
    assert await metric(cluster, "pushwire_room_refused_total", "denied") == denied_before + 1


async def test_the_per_address_limit_counts_clients_not_the_balancer(cluster: Cluster) -> None:
    # Every connection comes from the balancer; the limit (3) holds per client it names.
    for i in range(3):
        await served(await client(cluster, f"l{i}", source=BALANCER, preface=v1("192.0.2.50")))
    fourth = await client(cluster, "l3", source=BALANCER, preface=v1("192.0.2.50"))
    assert await fourth.wait_closed() == 4104
    other = await client(cluster, "l9", source=BALANCER, preface=v2("192.0.2.51"))
    await served(other)
    assert await metric(cluster, "pushwire_room_refused_total", "ip_limit") == 1


async def test_a_spoofed_header_from_an_untrusted_address_is_refused(cluster: Cluster) -> None:
    before = await metric(cluster, "pushwire_room_proxy_refused_total", "untrusted")
    spoofed = await client(cluster, "s1", source="127.0.0.2", preface=v1("198.51.100.10"))
    assert await spoofed.wait_closed() == ABNORMAL         # no WebSocket: TCP closed
    assert not spoofed.opened.done() or spoofed.opened.exception() is not None
    assert await metric(cluster, "pushwire_room_proxy_refused_total",
                        "untrusted") == before + 1
    direct = await client(cluster, "s2", source="127.0.0.2")   # no header: its own address
    await served(direct)


async def test_a_trusted_proxy_that_sends_no_header_is_cut_off(cluster: Cluster) -> None:
    before = await metric(cluster, "pushwire_room_proxy_refused_total", "timeout")
    host, port = endpoint_port(f"ws://{cluster.room('room-0').addresses['ws']}/")
    reader, writer = await asyncio.open_connection(host, port, local_addr=(BALANCER, 0))
    try:
        assert await asyncio.wait_for(reader.read(), 15) == b""      # closed, nothing said
    except ConnectionResetError:
        pass                                                         # or reset: also closed
    finally:
        writer.close()
    assert await metric(cluster, "pushwire_room_proxy_refused_total", "timeout") == before + 1


async def test_the_apps_allowed_origins_refuse_other_pages_at_auth(cluster: Cluster) -> None:
    other = await client(cluster, "o1", source="127.0.0.3", origin="https://evil.example")
    assert await other.wait_closed() == 4107
    error = last_error(other)
    assert (error.code, error.fatal, error.message) == \
        (1006, True, "origin not allowed for this app")
    assert await metric(cluster, "pushwire_room_refused_total", "app_origin") >= 1
    for origin in (PAGE, ""):                  # the app's page, and a client that is no page
        ok = await client(cluster, "o2", source="127.0.0.3", origin=origin)
        await served(ok)
        ok.abort()


async def options(url: str, origin: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http, http.options(url, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET"}) as resp:
        await resp.read()
        return resp


async def test_browsers_preflight_the_dispatcher_and_not_center(cluster: Cluster) -> None:
    route = f"{cluster.dispatcher}/v1/route?app={APP.id}&uid=u1"
    allowed = await options(route, PAGE)
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == PAGE
    assert "GET" in allowed.headers["Access-Control-Allow-Methods"]
    assert int(allowed.headers["Access-Control-Max-Age"]) > 0
    refused = await options(route, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in refused.headers
    async with aiohttp.ClientSession() as http, http.get(route, headers={"Origin": PAGE}) as r:
        assert r.status == 200 and (await r.json())["endpoints"]
        assert r.headers["Access-Control-Allow-Origin"] == PAGE
    center = await options(f"{cluster.center()}/v1/health", PAGE)   # not configured there
    assert center.status == 405 and "Access-Control-Allow-Origin" not in center.headers


# --- a real browser (headless Chromium driven by playwright-core, tests/browser) ------------

BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
CHROMIUM = os.environ.get("PUSHWIRE_TEST_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser")
# The page fetches the route (reading it needs CORS), then opens a WebSocket to the room and
# sends AUTH; it reports the route, the first message (base64) and the close (its own after
# AUTH_REPLY).
PAGE_SCRIPT = """<!doctype html><script>
const report = {};
fetch(%(route)s).then((r) => r.json()).then(
  (body) => { report.route = {endpoints: body.endpoints}; },
  (error) => { report.route = {error: String(error)}; }
).then(() => {
  const ws = new WebSocket(%(endpoint)s, "pushwire.v1");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(Uint8Array.from(atob(%(auth)s), (c) => c.charCodeAt(0)));
  ws.onmessage = (event) => {
    report.first ??= btoa(String.fromCharCode(...new Uint8Array(event.data)));
    // A packet's op is the u32 at byte 8 (docs/protocol.md §2): served, so leave.
    if (new DataView(event.data).getUint32(8) === %(auth_reply)d) ws.close(1000, "done");
  };
  ws.onclose = (event) => {
    report.close = {code: event.code, reason: event.reason};
    window.pushwireResult = report;
  };
});
</script>"""


@contextlib.asynccontextmanager
async def page_server(port: int, script: str) -> AsyncIterator[str]:
    """Serve `script` as the page at http://127.0.0.1:port/ (port 0: any free one)."""
    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=script, content_type="text/html")
    app = web.Application()
    app.add_routes([web.get("/", index)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def in_chromium(url: str) -> dict[str, object]:
    """What the page at `url` reports, run in a real headless Chromium."""
    proc = await asyncio.create_subprocess_exec(
        "node", str(BROWSER_DIR / "page.mjs"), url, cwd=BROWSER_DIR,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    report: dict[str, object] = json.loads(out.decode().splitlines()[-1])["result"]
    return report


# Skipped without a browser outside CI only: CI (CI=true) installs one (scripts/test), and
# there a missing browser is a failure, not a silent skip.
@pytest.mark.skipif((CHROMIUM is None or not (BROWSER_DIR / "node_modules").exists())
                    and os.environ.get("CI") != "true",
                    reason="needs chromium and `npm ci` in tests/browser (scripts/test does it)")
async def test_a_browser_page_routes_and_connects_only_from_an_allowed_origin(
        cluster: Cluster) -> None:
    assert CHROMIUM is not None and (BROWSER_DIR / "node_modules").exists(), \
        "no chromium or no `npm ci` in tests/browser: scripts/test installs them"
    endpoint = f"ws://{cluster.room('room-0').addresses['ws']}/"
    auth = wire.encode(Op.AUTH, 1, auth_of(APP.id, "edge-secret", "web-1").SerializeToString())
    script = PAGE_SCRIPT % {
        "route": json.dumps(f"{cluster.dispatcher}/v1/route?app={APP.id}&uid=web-1"),
        "endpoint": json.dumps(endpoint), "auth": json.dumps(base64.b64encode(auth).decode()),
        "auth_reply": Op.AUTH_REPLY}
    async with page_server(int(BROWSER_PAGE.rsplit(":", 1)[1]), script) as url:
        allowed = await in_chromium(url)
    assert allowed["route"] == {"endpoints": [endpoint]}, allowed
    first = base64.b64decode(str(allowed["first"]))
    assert [p.op for p in wire.decode(first)] == [Op.AUTH_REPLY], allowed
    assert allowed["close"] == {"code": 1000, "reason": "done"}, allowed
    async with page_server(0, script) as url:                     # another origin
        other = await in_chromium(url)
    assert "Failed to fetch" in str(other["route"]), other          # CORS kept the reply
    assert other["close"] == {"code": 4107, "reason": "origin not allowed for this app"}, other
