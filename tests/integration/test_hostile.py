"""Hostile clients against a real room (issue #10, docs/protocol.md §9 "Limits").

For each attack class: one attack from this process gets the documented answer (ERROR, then
the close code) and is counted in the room's `pushwire_room_violations_total{violation}`;
then an attacker *process* repeats it in a loop (a new connection after each close, at most
`Attack.rate` messages a second, bounded in count and time) while a good client beside it
sends heartbeats at random times and measures their round trips. The attacker is paused
(SIGSTOP) and resumed (SIGCONT) so that rounds without and with it alternate: both medians
come from the same minutes of the same noisy machine. The test asserts what the good client
notices (every heartbeat answered, its connection kept) and prints both medians and their
ratio; the target on that ratio (issue #10: within 3x) is a speed figure, so it is
read from these prints (`pytest -s`, bench/RESULTS.md "Hostile clients"), not asserted: a
machine loaded by other work moves it, and a timed assertion would fail there at random.

The attacker runs as `python -m tests.integration.test_hostile KIND HOST PORT SECRET
SECONDS COUNT` and prints one JSON line: how many attack messages it sent and how its
connections ended ("<close code>/<error code of the ERROR before it>": count).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bench.wsclient import BINARY, PING, WsError, client_frame
from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit.discovery import AppConfig
from tests.integration.cluster import Cluster, free_port
from tests.integration.rawclient import Raw, auth_of, dial, endpoint_port, raw_frame

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SECRET = "hostile-secret"
APP = AppConfig(id="hostile", secrets=(SECRET,), api_keys=("hostile-key",))
ROOT = Path(__file__).resolve().parents[2]

ROUNDS = 6              # alternating rounds without and with the attacker ...
SAMPLES = 100           # ... of this many heartbeats each (600 per side) ...
INTERVAL_S = 0.01       # ... one every 10 ms on average
SETTLE_S = 0.1          # after pausing or resuming the attacker
ATTACK_S = 120.0        # the attacker's own bounds: it stops by itself after this long ...
ATTACK_COUNT = 20_000   # ... or this many attack messages
FLOOD = 1000            # heartbeat messages written at once by the flood attack
BURST = 100             # packets a connection may send at once (room setting packet_burst)


# --- the attacks ---------------------------------------------------------------------------------

def _heartbeats(n: int) -> list[bytes]:
    return [wire.encode(Op.HEARTBEAT, seq) for seq in range(1, n + 1)]


def _frame(packet: bytes) -> bytes:
    return client_frame(packet)


def _ack_64k() -> tuple[bytes, ...]:
    # 65,400 one-byte ids: one 64 KiB message (the room's max_frame) with a valid token.
    ids = [i % 127 + 1 for i in range(65_400)]
    return _frame(wire.encode(Op.ACK, 0, wire_pb2.Ack(app=APP.id, ids=ids)
                              .SerializeToString())),


def _pre_auth_batch() -> tuple[bytes, ...]:
    return _frame(wire.encode_batch(_heartbeats(200))),       # 3.2 KiB, no token needed


def _pre_auth_batch_64k() -> tuple[bytes, ...]:
    return _frame(wire.encode_batch(_heartbeats(4095))),      # 64 KiB, no token needed


def _flood() -> tuple[bytes, ...]:
    return b"".join(_frame(p) for p in _heartbeats(FLOOD)),    # FLOOD messages in one write


def _big_batch() -> tuple[bytes, ...]:
    return _frame(wire.encode_batch(_heartbeats(1000))),


def _unbatched() -> tuple[bytes, ...]:
    return _frame(b"".join(_heartbeats(2))),                   # two packets, no BATCH


def _bad_ver() -> tuple[bytes, ...]:
    packet = wire.encode(Op.HEARTBEAT, 1)
    return _frame(packet[:6] + (99).to_bytes(2, "big") + packet[8:]),


def _ws_garbage() -> tuple[bytes, ...]:
    """Frames RFC 6455 forbids, one per connection in turn (websockets' reason)."""
    return (bytes((0x80 | BINARY, 4)) + b"abcd",                # incorrect masking
            raw_frame(0x80 | 0x40 | BINARY, b"abcd"),             # reserved bits must be 0
            raw_frame(0x80 | PING, bytes(200)),                   # control frame too long
            raw_frame(PING, b"ping"),                             # fragmented control frame
            raw_frame(0x80 | 0x3, b"abcd"))                       # invalid opcode


@dataclass(frozen=True)
class Attack:
    build: Callable[[], tuple[bytes, ...]]   # the messages; connection n writes the n-th
    authed: bool                      # sent after AUTH_REPLY (else right after the handshake)
    close: int                        # the documented answer: close code ...
    error: int                        # ... after ERROR{code, fatal=true} ...
    says: str                         # ... whose message contains this
    violation: str                    # the label it is counted under
    rate: float                       # attack messages per second at most (see RATES)

    def message(self, n: int) -> bytes:
        messages = _built(self.build)
        return messages[n % len(messages)]


@functools.cache
def _built(build: Callable[[], tuple[bytes, ...]]) -> tuple[bytes, ...]:
    return build()      # once per process: the attacker spends its time sending, not masking


# The attacker writes at most this many attack messages per second, a new connection after
# each close. On main one 64 KiB ACK cost the room 0.31 s and one pre-AUTH BATCH ~40 ms, so
# these rates stalled it for good; bounded, each costs a connection: ~0.3 ms of room CPU
# without AUTH, ~2.5 ms with (AUTH's own calls to register and saver: a reconnect storm,
# which the access policy's accept rate and per-address limit bound, docs/operations.md §2).
PRE_AUTH_RATE, AUTHED_RATE = 100.0, 20.0

ATTACKS = {
    "ack_64k": Attack(_ack_64k, True, 4104, 1005, "ids in one ACK", "ack_ids", AUTHED_RATE),
    "pre_auth_batch": Attack(_pre_auth_batch, False, 4103, 1002, "BATCH before AUTH",
                             "pre_auth_batch", PRE_AUTH_RATE),
    "pre_auth_batch_64k": Attack(_pre_auth_batch_64k, False, 4104, 1005, "message too big",
                                 "too_big", PRE_AUTH_RATE),
    "flood": Attack(_flood, True, 4104, 1005, "packets per second", "packet_rate",
                    AUTHED_RATE),
    "big_batch": Attack(_big_batch, True, 4104, 1005, "packets in one BATCH", "batch_packets",
                        AUTHED_RATE),
    "unbatched": Attack(_unbatched, True, 4103, 1002, "one packet per message", "unbatched",
                        AUTHED_RATE),
    "bad_ver": Attack(_bad_ver, False, 4108, 1002, "version 99", "version", PRE_AUTH_RATE),
    "ws_garbage": Attack(_ws_garbage, False, 4103, 1002, "WebSocket protocol error",
                         "websocket", PRE_AUTH_RATE),
}


# --- the attacker process ------------------------------------------------------------------------

class _Pace:
    """Slots `1 / rate` apart; a slot missed (the process was paused) is not made up."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        self.next = max(self.next + self.interval, now)
        await asyncio.sleep(self.next - now)


@dataclass
class _Budget:
    left: int           # attack messages still allowed; 0 stops the attacker
    sent: int = 0

    def spend(self) -> None:
        self.left -= 1
        self.sent += 1


async def _one_connection(attack: Attack, n: int, host: str, port: int, secret: str,
                          budget: _Budget, pace: _Pace) -> str:
    """Attack on one connection until the room closes it (or the budget is spent); how it
    ended: "<close code>/<code of the last ERROR, 0 for none>" (code 0: not closed)."""
    auth = auth_of(APP.id, secret, "attacker", device=f"evil{n}") if attack.authed else None
    client = await dial(host, port, auth)
    try:
        await asyncio.wait_for(asyncio.shield(client.replied if auth else client.opened), 30)
        while not client.closed.done() and budget.left > 0:
            client.write(attack.message(n))
            budget.spend()
            # Closed loop: the next attack once the room has handled this one.
            with contextlib.suppress(ConnectionError, TimeoutError):
                await client.ping(timeout=30)
            await pace.wait()
        code = await client.wait_closed(30) if client.closed.done() else 0
    finally:
        client.abort()
    errors = client.errors()
    return f"{code}/{errors[-1].code if errors else 0}"


async def _attack(kind: str, host: str, port: int, secret: str, seconds: float,
                  count: int) -> dict[str, Any]:
    attack, budget, ended = ATTACKS[kind], _Budget(count), Counter[str]()
    pace = _Pace(attack.rate)

    async def loop() -> None:
        n = 0
        while budget.left > 0:
            try:
                ended[await _one_connection(attack, n, host, port, secret, budget, pace)] += 1
            except (OSError, TimeoutError, WsError) as exc:
                # Loopback churn: now and then a connect is refused (seen on main too) or a
                # handshake outlasts the timeout; the room did no work for it.
                ended[f"0/{type(exc).__name__}"] += 1
                await pace.wait()
            n += 1

    def stop() -> None:
        # asyncio.wait_for (3.11) may swallow a cancel that races with its inner future: an
        # empty budget ends the loops at their next check whatever happens to the cancel.
        budget.left = 0
        task.cancel()

    task = asyncio.create_task(loop())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    print("ready", flush=True)
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, seconds)
    return {"sent": budget.sent, "ended": dict(ended)}


@dataclass
class Attacker:
    """An attacker process (the module's __main__), paused and resumed by signals."""

    proc: asyncio.subprocess.Process

    @classmethod
    async def start(cls, kind: str, host: str, port: int) -> Attacker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.test_hostile", kind, host, str(port),
            SECRET, str(ATTACK_S), str(ATTACK_COUNT), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE)
        attacker = cls(proc)
        assert proc.stdout is not None
        try:
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        except BaseException:
            await attacker.kill()
            raise
        return attacker

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> dict[str, Any]:
        """End the attack; its report."""
        self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        except TimeoutError:
            await self.kill()
            raise
        assert self.proc.returncode == 0, self.proc.returncode
        report: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
        return report

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.resume()
            self.proc.kill()
        await self.proc.communicate()


# --- the cluster, the good client and the room's counters ----------------------------------------

@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    metrics = {"PUSHWIRE_ROOM_METRICS_PORT": str(free_port())}
    async with Cluster(tmp_path_factory.mktemp("hostile"), real=True, app=APP,
                       proc_env={"room-0": metrics}) as c:
        yield c


def _room(cluster: Cluster) -> Any:
    assert cluster.discovery is not None
    [room] = cluster.discovery.instances("room")
    return room


def room_address(cluster: Cluster) -> tuple[str, int]:
    return endpoint_port(f"ws://{_room(cluster).addresses['ws']}/")


async def violations(cluster: Cluster, violation: str) -> float:
    """The room's `pushwire_room_violations_total{violation}`."""
    url = f"http://{_room(cluster).addresses['metrics']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "pushwire_room_violations_total"
                    and sample.labels.get("violation") == violation):
                return float(sample.value)
    return 0.0


@pytest_asyncio.fixture(loop_scope="module")
async def good(cluster: Cluster) -> AsyncIterator[Raw]:
    host, port = room_address(cluster)
    client = await dial(host, port, auth_of(APP.id, SECRET, "good", device="phone"))
    await asyncio.wait_for(asyncio.shield(client.replied), 10)
    for _ in range(20):                     # warm both ends up
        await client.ping()
    yield client
    client.abort()


async def heartbeat_rtts(good: Raw, pace: random.Random) -> list[float]:
    """One round: SAMPLES heartbeats sent at random times (exponential gaps, INTERVAL_S on
    average), whether the last one was answered or not. One after the other would sample a
    stalled room once per stall; at a fixed period they could beat in step with the paced
    attacker. Poisson arrivals see the room as it is on average."""
    pings: list[asyncio.Future[float]] = []
    for _ in range(SAMPLES):
        pings.append(asyncio.ensure_future(good.ping(timeout=30)))
        await asyncio.sleep(pace.expovariate(1 / INTERVAL_S))
    return list(await asyncio.gather(*pings))


async def rtts_without_and_with(attacker: Attacker, good: Raw) -> tuple[list[float],
                                                                         list[float]]:
    without: list[float] = []
    with_attacker: list[float] = []
    pace = random.Random(0)
    for _ in range(ROUNDS):
        attacker.pause()
        await asyncio.sleep(SETTLE_S)
        for _ in range(3):                  # the room works off what the attacker sent last
            await good.ping(timeout=30)
        without += await heartbeat_rtts(good, pace)
        attacker.resume()
        await asyncio.sleep(SETTLE_S)
        with_attacker += await heartbeat_rtts(good, pace)
    attacker.pause()
    return without, with_attacker


def summary(rtts: list[float]) -> str:
    ordered = sorted(rtts)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"median {statistics.median(rtts) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, "
            f"n={len(rtts)}")


# --- the tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(ATTACKS))
async def test_one_attack_gets_the_documented_answer_and_is_counted(cluster: Cluster,
                                                                     kind: str) -> None:
    attack = ATTACKS[kind]
    before = await violations(cluster, attack.violation)
    host, port = room_address(cluster)
    auth = auth_of(APP.id, SECRET, "one-attacker", device="evil") if attack.authed else None
    client = await dial(host, port, auth)
    await asyncio.wait_for(asyncio.shield(client.replied if auth else client.opened), 10)
    client.write(attack.message(0))
    try:
        assert await client.wait_closed() == attack.close
    finally:
        client.abort()
    *_, error = client.errors()
    assert (error.code, error.fatal) == (attack.error, True)
    assert attack.says in error.message, error.message
    # Nothing of it was acted on, except the flood's packets within the connection's burst.
    assert len(client.of(Op.HEARTBEAT_REPLY)) <= (BURST if kind == "flood" else 0)
    assert await violations(cluster, attack.violation) == before + 1


@pytest.mark.parametrize("kind", list(ATTACKS))
async def test_a_good_client_keeps_its_heartbeat_rtt_beside_a_looping_attacker(
        cluster: Cluster, good: Raw, kind: str) -> None:
    attack = ATTACKS[kind]
    before = await violations(cluster, attack.violation)
    attacker = await Attacker.start(kind, *room_address(cluster))
    try:
        without, with_attacker = await rtts_without_and_with(attacker, good)
    except BaseException:
        await attacker.kill()
        raise
    report = await attacker.stop()
    ratio = statistics.median(with_attacker) / statistics.median(without)
    print(f"\n{kind}: without {summary(without)}; with {summary(with_attacker)}; "
          f"median ratio {ratio:.2f}; attacker {report}")
    ended = Counter({k: n for k, n in report["ended"].items() if not k.startswith("0/")})
    assert set(ended) == {f"{attack.close}/{attack.error}"}, report   # each one answered
    assert ended.total() >= ROUNDS, report                            # it did attack
    assert await violations(cluster, attack.violation) >= before + ended.total()
    # Every heartbeat was answered (heartbeat_rtts raises on one that is not) on a
    # connection that stayed up: the attack stalled no one for good.
    assert len(with_attacker) == len(without) == ROUNDS * SAMPLES
    assert not good.closed.done()


if __name__ == "__main__":
    # A real attacker's CPU is not the room machine's. Here the two share a small, busy
    # machine: at a lower priority the attacker yields the CPU whenever the room or the good
    # client wake up, so the good client measures the room's work for the attack, not the
    # attacker process's own hunger beside them (it still attacks at its rate when it can).
    os.nice(10)
    kind_, host_, port_, secret_, seconds_, count_ = sys.argv[1:]
    print(json.dumps(asyncio.run(_attack(kind_, host_, int(port_), secret_, float(seconds_),
                                         int(count_)))), flush=True)
