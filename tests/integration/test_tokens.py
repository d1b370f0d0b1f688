"""Client tokens through a real cluster (issue 11, docs/protocol.md §4.1): JWTs made by PyJWT
alone, with no pushwire code, as a backend in any language would make them.

HS256 with the app's secret, ES256 with a public key in the app configuration, RS256 with a
key of a JWKS served here by a real HTTP server and rotated under the room, and the close
codes and reasons of the refused ones, read on a real room socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushwire_protocol.pb import wire_pb2
from services.kit.discovery import AppConfig
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, dial, endpoint_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SECRET = "tokens-test-secret-of-32-bytes!!"
EC_SIGNER = ec.generate_private_key(ec.SECP256R1())
EC_PEM = EC_SIGNER.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class JwksServer:
    """A JWKS endpoint on loopback: GET /<name>.json answers the keys of `sets[name]`; a name
    in `hung` is answered only when its event is set."""

    def __init__(self) -> None:
        self.sets: dict[str, list[dict[str, Any]]] = {}
        self.reads: dict[str, int] = {}
        self.hung: dict[str, asyncio.Event] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.json"

    def publish(self, name: str, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.sets[name] = [{**jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key(), as_dict=True),
                            "kid": kid, "use": "sig", "alg": "RS256"} for kid, k in keys]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}.json", self._serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        for event in self.hung.values():
            event.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.reads[name] = self.reads.get(name, 0) + 1
        if name in self.hung:
            await self.hung[name].wait()
        if name not in self.sets:
            return web.json_response({"error": "no such key set"}, status=404)
        return web.json_response({"keys": self.sets[name], "padding": "x" * self.padding})

    padding = 0                 # bytes added to every document (a JWKS too big to take)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory,
                  jwks: JwksServer) -> AsyncIterator[Cluster]:
    app = AppConfig(id="demo", secrets=(SECRET,), api_keys=("test-key",),
                    token_keys={"es1": EC_PEM}, jwks_url=jwks.url("demo"))
    # No refetch pause: the rotation below is seen by the next client, whenever it comes
    # (the pause itself is tests/room/test_jwks.py's). No fetch times out during a test (the
    # timeout is tests/room/test_jwks.py's too).
    env = {"PUSHWIRE_ROOM_JWKS_REFETCH_S": "0.001", "PUSHWIRE_ROOM_JWKS_TIMEOUT_S": "60"}
    async with Cluster(tmp_path_factory.mktemp("tokens"), real=True, app=app, env=env) as c:
        yield c


OPENED: list[Raw] = []


@pytest.fixture(autouse=True)
def drop_clients() -> Iterator[None]:
    yield
    for c in OPENED:
        c.abort()
    OPENED.clear()


def claims(uid: str, app: str = "demo", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": uid, "app": app, "iat": now, "exp": now + 600}
    return {**base, **over}


async def connect(cluster: Cluster, uid: str, tok: str, app: str = "demo") -> Raw:
    """A raw client sending AUTH for (app, uid, device "raw") with `tok`."""
    host, port = endpoint_port(f"ws://{cluster.room('room-0').addresses['ws']}/")
    client = await dial(host, port, wire_pb2.Auth(app=app, uid=uid, device="raw", token=tok))
    OPENED.append(client)
    return client


async def served(cluster: Cluster, uid: str, tok: str) -> Raw:
    """Connected with `tok`, and a push to `uid` reaches the connection."""
    client = await connect(cluster, uid, tok)
    await asyncio.wait_for(asyncio.shield(client.replied), 15)
    status, body = await cluster.push(uid, f"hello {uid}")
    assert status == 200, body

    (message,) = body["messages"]

    async def pushed() -> bool:     # (a copy may come again: the test does not ACK at once)
        return int(message["id"]) in client.push_ids()
    await eventually(pushed, timeout=15)
    client.ack("demo", [int(message["id"])])
    return client


async def refused(cluster: Cluster, tok: str, uid: str = "nobody") -> tuple[int, str, int]:
    """(close code, ERROR message, ERROR code) of a client the room refused."""
    client = await connect(cluster, uid, tok)
    code = await client.wait_closed(15)
    assert not client.replied.done() or client.replied.exception() is not None
    (error,) = client.errors()
    assert error.fatal
    return code, error.message, error.code


async def test_a_token_made_by_pyjwt_alone_with_the_app_secret_is_served(
        cluster: Cluster) -> None:
    await served(cluster, "hs-plain", jwt.encode(claims("hs-plain"), SECRET, algorithm="HS256"))
    # aud instead of app, with a device and an nbf just passed: the same.
    now = int(time.time())
    device_bound = {"sub": "hs-aud", "aud": "demo", "dev": "raw", "iat": now, "nbf": now - 1,
                    "exp": now + 600}
    await served(cluster, "hs-aud", jwt.encode(device_bound, SECRET, algorithm="HS256"))


async def test_an_es256_token_whose_public_key_is_in_the_app_configuration_is_served(
        cluster: Cluster) -> None:
    tok = jwt.encode(claims("es-user"), EC_SIGNER, algorithm="ES256", headers={"kid": "es1"})
    await served(cluster, "es-user", tok)


@pytest.mark.parametrize(("case", "code", "message"), [
    ("expired", 4101, "token expired"),
    ("not yet valid", 4100, "token not yet valid"),
    ("wrong secret", 4100, "bad token signature"),
    ("wrong ec key", 4100, "bad token signature"),
    ("unknown kid", 4100, "token key id (kid) names no key of the app"),
    ("wrong app", 4100, "token is for another app"),
    ("wrong user", 4100, "token is for another user"),
    ("alg none", 4100, "token algorithm not accepted (HS256, RS256, ES256)"),
    ("malformed", 4100, "malformed token"),
])
async def test_refused_tokens_close_with_the_documented_code_and_reason(
        cluster: Cluster, case: str, code: int, message: str) -> None:
    now = int(time.time())
    stranger = ec.generate_private_key(ec.SECP256R1())
    tokens = {
        "expired": jwt.encode(claims("nobody", iat=now - 7200, exp=now - 3600), SECRET,
                              algorithm="HS256"),
        "not yet valid": jwt.encode(claims("nobody", nbf=now + 3600), SECRET,
                                    algorithm="HS256"),
        "wrong secret": jwt.encode(claims("nobody"), "another-secret-of-32-bytes-long!",
                                   algorithm="HS256"),
        "wrong ec key": jwt.encode(claims("nobody"), stranger, algorithm="ES256",
                                   headers={"kid": "es1"}),
        "unknown kid": jwt.encode(claims("nobody"), SECRET, algorithm="HS256",
                                  headers={"kid": "0123456789abcdef"}),
        "wrong app": jwt.encode(claims("nobody", app="other"), SECRET, algorithm="HS256"),
        "wrong user": jwt.encode(claims("somebody"), SECRET, algorithm="HS256"),
        "alg none": jwt.encode(claims("nobody"), None, algorithm="none"),
        "malformed": "not.a.jwt",
    }
    assert await refused(cluster, tokens[case]) == (code, message, 1004)


async def test_a_jwks_key_is_used_and_a_rotated_one_is_picked_up(
        cluster: Cluster, jwks: JwksServer) -> None:
    first, second = (rsa.generate_private_key(65537, 2048) for _ in range(2))
    jwks.publish("demo", ("r1", first))
    await served(cluster, "rs-1", jwt.encode(claims("rs-1"), first, algorithm="RS256",
                                             headers={"kid": "r1"}))
    reads = jwks.reads["demo"]
    # Cached: another r1 client costs no fetch.
    await served(cluster, "rs-2", jwt.encode(claims("rs-2"), first, algorithm="RS256",
                                             headers={"kid": "r1"}))
    assert jwks.reads["demo"] == reads
    # Rotated: the room reads the JWKS again for the unknown kid r2 and serves it.
    jwks.publish("demo", ("r2", second))
    await served(cluster, "rs-3", jwt.encode(claims("rs-3"), second, algorithm="RS256",
                                             headers={"kid": "r2"}))
    assert jwks.reads["demo"] == reads + 1
    # r1 left the JWKS: its tokens name no key any more.
    gone = jwt.encode(claims("nobody"), first, algorithm="RS256", headers={"kid": "r1"})
    assert await refused(cluster, gone) == (
        4100, "token key id (kid) names no key of the app", 1004)


async def add_app(cluster: Cluster, app: AppConfig) -> None:
    """Put `app` in discovery and wait until the room serves it (an HS256 client is served)."""
    assert cluster.discovery is not None
    await cluster.discovery.put_app(app)

    async def known() -> bool:
        probe = await connect(cluster, "probe", jwt.encode(claims("probe", app=app.id), SECRET,
                                                           algorithm="HS256"), app=app.id)
        done, _ = await asyncio.wait([probe.replied, probe.closed], timeout=15,
                                     return_when=asyncio.FIRST_COMPLETED)
        return probe.replied in done and not probe.replied.exception()
    await eventually(known, timeout=30)


async def test_a_jwks_that_cannot_be_read_refuses_with_4004_and_no_detail(
        cluster: Cluster, jwks: JwksServer) -> None:
    signer = rsa.generate_private_key(65537, 2048)
    await add_app(cluster, AppConfig(id="broken", secrets=(SECRET,),
                                     jwks_url=jwks.url("missing")))
    tok = jwt.encode(claims("nobody", app="broken"), signer, algorithm="RS256",
                     headers={"kid": "m1"})
    client = await connect(cluster, "nobody", tok, app="broken")        # HTTP 404
    assert await client.wait_closed(15) == 4004
    (error,) = client.errors()
    assert error.message == "the app's token keys (jwks_url) cannot be fetched now"
    jwks.padding = 70 * 1024                                            # over 64 KiB
    jwks.publish("missing", ("m1", signer))
    client = await connect(cluster, "nobody", tok, app="broken")
    assert await client.wait_closed(15) == 4004
    assert jwks.reads["missing"] == 2
    jwks.padding = 0                                                    # readable: served
    client = await connect(cluster, "nobody", tok, app="broken")
    assert (await asyncio.wait_for(asyncio.shield(client.replied), 15)).session_id


async def test_a_hung_jwks_delays_only_its_own_clients(cluster: Cluster,
                                                       jwks: JwksServer) -> None:
    signer = rsa.generate_private_key(65537, 2048)
    jwks.publish("slow", ("s1", signer))
    jwks.hung["slow"] = asyncio.Event()
    await add_app(cluster, AppConfig(id="slow", secrets=(SECRET,), jwks_url=jwks.url("slow")))

    waiting = await connect(cluster, "rs-slow", jwt.encode(
        claims("rs-slow", app="slow"), signer, algorithm="RS256", headers={"kid": "s1"}),
        app="slow")

    async def fetching() -> bool:
        return jwks.reads.get("slow", 0) == 1
    await eventually(fetching, timeout=15)
    # The JWKS answers nothing until told to: were the room waiting on it anywhere but in
    # that client's AUTH, nobody else would be served now.
    await served(cluster, "during", jwt.encode(claims("during"), SECRET, algorithm="HS256"))
    assert not jwks.hung["slow"].is_set() and jwks.reads["slow"] == 1
    jwks.hung["slow"].set()
    # Answered: that client is served, or, when the JWKS took longer than its AUTH deadline
    # (auth_timeout_s, 10 s), refused with 4005; the next one is served from the cache.
    done, _ = await asyncio.wait([waiting.replied, waiting.closed], timeout=30,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert (waiting.replied in done and not waiting.replied.exception()) or \
        waiting.closed.result() == 4005
    again = await connect(cluster, "rs-slow", jwt.encode(
        claims("rs-slow", app="slow"), signer, algorithm="RS256", headers={"kid": "s1"}),
        app="slow")
    assert (await asyncio.wait_for(asyncio.shield(again.replied), 15)).session_id
    assert jwks.reads["slow"] == 1
