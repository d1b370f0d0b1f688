"""One client session per protocol, sans-I/O: messages in, messages to send out.

    session = PushwireSession(tally, app, uid, device, token)      # or NatsSession, MqttSession
    send(session.opening())              # once the WebSocket is open
    send(session.on_message(payload, now_ns))   # for every WebSocket message

Each session counts into the worker's shared `Tally`: when it became ready (authenticated /
subscribed), deliveries (a pushwire BATCH counts every packet inside), and, when asked,
the latency of each delivery from the send time its payload starts with (`stamp`), or
(`per_message`) the first and last arrival of each message, keyed by that send time.

The NATS and MQTT framings are the minimum the benchmark needs, written from the protocol
documents: NATS' text protocol (INFO, CONNECT, SUB, PUB, MSG, PING/PONG, +OK/-ERR) and
MQTT 3.1.1 (CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH QoS 0/1, PUBACK, PINGREQ/PINGRESP).
"""

from __future__ import annotations

import json
import struct
import time

from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op

STAMP_LEN = 20


def stamp(size: int, now_ns: int | None = None) -> bytes:
    """A payload of `size` bytes (>= 20) that starts with the send time (monotonic ns)."""
    head = b"%020d" % (time.monotonic_ns() if now_ns is None else now_ns)
    return head + b"x" * (size - STAMP_LEN)


def stamped_ns(payload: bytes | bytearray | memoryview) -> int:
    """The send time a `stamp` payload carries; 0 for a payload without one."""
    head = bytes(payload[:STAMP_LEN])
    return int(head) if head.isdigit() else 0


class Tally:
    """Counters of one load-generator process, shared by all its sessions."""

    __slots__ = ("arrivals", "deliveries", "duplicates", "errors", "first_ns", "last_ns",
                 "latencies", "per_message", "ready", "ready_ns", "record")

    def __init__(self, record: bool = False, per_message: bool = False) -> None:
        self.record = record               # keep each delivery's latency
        self.per_message = per_message     # with record: keep arrivals per message instead
        self.ready = 0                     # sessions authenticated / subscribed
        self.ready_ns = 0                  # when the last of them became ready
        self.reset()

    def reset(self) -> None:
        """Zero the delivery counters (not `ready`: that describes the connections)."""
        self.deliveries = 0
        self.duplicates = 0                # copies of a unicast message a session had
        self.errors = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies: list[int] = []
        self.arrivals: dict[int, list[int]] = {}     # send time -> [first, last, count]

    def became_ready(self, now_ns: int) -> None:
        self.ready += 1
        self.ready_ns = now_ns

    def delivered(self, count: int, now_ns: int) -> None:
        if not self.first_ns:
            self.first_ns = now_ns
        self.last_ns = now_ns
        self.deliveries += count

    def latency(self, payload: bytes | bytearray | memoryview, now_ns: int) -> None:
        sent = stamped_ns(payload)
        if not sent:
            return
        if not self.per_message:
            self.latencies.append(now_ns - sent)
            return
        seen = self.arrivals.get(sent)
        if seen is None:
            self.arrivals[sent] = [now_ns, now_ns, 1]
        else:                              # arrivals come in time order within a process
            seen[1] = now_ns
            seen[2] += 1


class Session:
    """What every protocol session offers the connection that carries it."""

    __slots__ = ()
    subprotocol = ""
    ready: bool

    def opening(self) -> list[bytes]:
        """Messages to send once the WebSocket is open."""
        return []

    def on_message(self, payload: bytes, now_ns: int) -> list[bytes]:
        """Handle one WebSocket message; return the messages to send back."""
        raise NotImplementedError

    def heartbeat(self) -> bytes:
        """The keepalive message to send now; b"" for none."""
        return b""


# --- pushwire (docs/protocol.md) -------------------------------------------------------------

_OP = struct.Struct(">I")
SEEN_IDS = 256          # unicast ids a session remembers to drop copies
_HEAD = wire.HEADER


class PushwireSession(Session):
    """A pushwire client: AUTH (then BIND when `topics`), count PUSHes, ACK unicast ones.

    `ready_on_push`: count the session ready only when its first PUSH arrives (the connection
    storm, where that push is the offline message loaded on connect)."""

    subprotocol = "pushwire.v1"
    __slots__ = ("ack", "app", "device", "heartbeat_s", "ready", "ready_on_push", "seen",
                 "tally", "token", "topics", "uid")

    def __init__(self, tally: Tally, app: str, uid: str, device: str, token: str, *,
                 ack: bool = False, topics: tuple[str, ...] = (),
                 ready_on_push: bool = False, heartbeat_s: int = 600) -> None:
        self.tally = tally
        self.app, self.uid, self.device, self.token = app, uid, device, token
        self.ack = ack
        self.topics = topics
        self.ready_on_push = ready_on_push
        self.heartbeat_s = heartbeat_s
        self.ready = False
        self.seen: dict[int, None] | None = None    # the last SEEN_IDS unicast ids

    def opening(self) -> list[bytes]:
        auth = wire_pb2.Auth(app=self.app, uid=self.uid, device=self.device, token=self.token,
                             heartbeat_s=self.heartbeat_s)
        return [wire.encode(Op.AUTH, 1, auth.SerializeToString())]

    def heartbeat(self) -> bytes:
        return wire.encode(Op.HEARTBEAT, 0) if self.ready else b""

    def on_message(self, payload: bytes, now_ns: int) -> list[bytes]:
        op = _OP.unpack_from(payload, 8)[0]
        if op == Op.PUSH:
            return self._pushes([payload], now_ns)
        if op == Op.BATCH:
            return self._pushes(_inner(payload), now_ns)
        if op == Op.AUTH_REPLY:
            return self._authed(now_ns)
        if op == Op.BIND_REPLY and not self.ready:
            self._ready(now_ns)
        elif op == Op.ERROR or op == Op.KICK:
            self.tally.errors += 1
        return []

    def _authed(self, now_ns: int) -> list[bytes]:
        if self.topics:
            bind = wire_pb2.Bind(app=self.app, token=self.token, topics=list(self.topics))
            return [wire.encode(Op.BIND, 2, bind.SerializeToString())]
        if not self.ready_on_push:
            self._ready(now_ns)
        return []

    def _ready(self, now_ns: int) -> None:
        self.ready = True
        self.tally.became_ready(now_ns)

    def _pushes(self, packets: list[bytes], now_ns: int) -> list[bytes]:
        tally = self.tally
        if not (self.ack or tally.record):
            tally.delivered(sum(1 for p in packets if _OP.unpack_from(p, 8)[0] == Op.PUSH),
                            now_ns)
            return []
        ids: list[int] = []
        for packet in packets:
            if _OP.unpack_from(packet, 8)[0] != Op.PUSH:
                continue
            push = wire_pb2.Push.FromString(packet[_HEAD.unpack_from(packet)[1]:])
            if push.kind == wire_pb2.Push.UNICAST:
                ids.append(push.id)         # a copy is ACKed again, as the SDKs do
                if self._copy(push.id):
                    tally.duplicates += 1
                    continue
            tally.delivered(1, now_ns)
            if tally.record:
                tally.latency(push.data, now_ns)
        if self.ready_on_push and not self.ready and ids:
            self._ready(now_ns)
        if not (self.ack and ids):
            return []
        return [wire.encode(Op.ACK, 0, wire_pb2.Ack(app=self.app, ids=ids).SerializeToString())]


    def _copy(self, message_id: int) -> bool:
        """True for an id this session had among its last SEEN_IDS: a copy (a redelivery
        or a reload of a message already written), which clients drop (docs/protocol.md
        §6) and the bench neither counts nor times."""
        seen = self.seen
        if seen is None:
            seen = self.seen = {}
        elif message_id in seen:
            return True
        seen[message_id] = None
        if len(seen) > SEEN_IDS:
            del seen[next(iter(seen))]
        return False


def _inner(batch: bytes) -> list[bytes]:
    """The packets inside a BATCH packet (whole, headers included)."""
    header_len = _HEAD.unpack_from(batch)[1]
    packets = []
    pos, end = header_len, len(batch)
    while pos + wire.HEADER_LEN <= end:
        length = _HEAD.unpack_from(batch, pos)[0]
        packets.append(batch[pos:pos + length])
        pos += length
    return packets


# --- NATS text protocol over WebSocket ---------------------------------------------------------

NATS_CONNECT = json.dumps({"verbose": False, "pedantic": False, "protocol": 1,
                           "headers": False, "no_responders": False, "lang": "python",
                           "version": "bench", "name": "pushwire-bench"},
                          separators=(",", ":")).encode()


def nats_pub(subject: str, payload: bytes) -> bytes:
    return b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)


class NatsSession(Session):
    """A NATS client: CONNECT, SUB `subject` and PING on INFO; ready on the first PONG;
    counts MSGs. With an empty subject it only connects (a publisher)."""

    __slots__ = ("_buf", "pongs", "ready", "subject", "tally")

    def __init__(self, tally: Tally, subject: str) -> None:
        self.tally = tally
        self.subject = subject
        self.ready = False
        self.pongs = 0
        self._buf = b""

    def on_message(self, payload: bytes, now_ns: int) -> list[bytes]:
        buf = self._buf + payload if self._buf else payload
        out: list[bytes] = []
        pos, n, count = 0, len(buf), 0
        record = self.tally.record
        while pos < n:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"MSG ", pos):
                size = int(buf[buf.rfind(b" ", pos, eol) + 1:eol])
                end = eol + 2 + size + 2
                if end > n:
                    break
                count += 1
                if record:
                    self.tally.latency(buf[eol + 2:eol + 2 + STAMP_LEN], now_ns)
                pos = end
                continue
            self._control(buf[pos:eol], out, now_ns)
            pos = eol + 2
        self._buf = buf[pos:]
        if count:
            self.tally.delivered(count, now_ns)
        return out

    def _control(self, line: bytes, out: list[bytes], now_ns: int) -> None:
        if line == b"PING":
            out.append(b"PONG\r\n")
        elif line == b"PONG":
            self.pongs += 1
            if not self.ready:
                self.ready = True
                self.tally.became_ready(now_ns)
        elif line.startswith(b"INFO "):
            sub = b"SUB %s 1\r\n" % self.subject.encode() if self.subject else b""
            out.append(b"CONNECT " + NATS_CONNECT + b"\r\n" + sub + b"PING\r\n")
        elif line.startswith(b"-ERR"):
            self.tally.errors += 1


# --- MQTT 3.1.1 over WebSocket -----------------------------------------------------------------

def _varint(n: int) -> bytes:
    """MQTT's remaining-length encoding (7 bits a byte, high bit: more)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def mqtt_packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def mqtt_connect(client_id: str, keepalive_s: int = 0) -> bytes:
    """CONNECT, clean session, no will, no credentials."""
    return mqtt_packet(0x10, _str("MQTT") + bytes((4, 0x02)) + struct.pack("!H", keepalive_s)
                       + _str(client_id))


def mqtt_subscribe(packet_id: int, topic: str, qos: int) -> bytes:
    return mqtt_packet(0x82, struct.pack("!H", packet_id) + _str(topic) + bytes((qos,)))


def mqtt_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    pid = struct.pack("!H", packet_id) if qos else b""
    return mqtt_packet(0x30 | (qos << 1), _str(topic) + pid + payload)


MQTT_PINGREQ = b"\xc0\x00"


class MqttSession(Session):
    """An MQTT client: CONNECT, then SUBSCRIBE `topic` on CONNACK; ready on SUBACK; counts
    PUBLISHes and answers QoS 1 ones with PUBACK. With an empty topic it only connects, ready on
    CONNACK (a publisher; `acks` counts the PUBACKs it gets, `pings` the PINGRESPs)."""

    subprotocol = "mqtt"
    __slots__ = ("_buf", "acks", "client_id", "pings", "qos", "ready", "tally", "topic")

    def __init__(self, tally: Tally, client_id: str, topic: str, qos: int = 0) -> None:
        self.tally = tally
        self.client_id = client_id
        self.topic = topic
        self.qos = qos
        self.ready = False
        self.acks = 0
        self.pings = 0
        self._buf = b""

    def opening(self) -> list[bytes]:
        return [mqtt_connect(self.client_id)]

    def on_message(self, payload: bytes, now_ns: int) -> list[bytes]:
        buf = self._buf + payload if self._buf else payload
        out: list[bytes] = []
        pos, n, count = 0, len(buf), 0
        while n - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while i < n and buf[i] & 0x80:
                length |= (buf[i] & 0x7F) << shift
                shift += 7
                i += 1
            if i >= n:
                break
            length |= buf[i] << shift
            start, end = i + 1, i + 1 + length
            if end > n:
                break
            first = buf[pos]
            if first >> 4 == 3:
                count += 1
                self._publish(first, buf, start, end, out, now_ns)
            else:
                self._control(first, buf[start:end], out, now_ns)
            pos = end
        self._buf = buf[pos:]
        if count:
            self.tally.delivered(count, now_ns)
        return out

    def _publish(self, first: int, buf: bytes, start: int, end: int, out: list[bytes],
                 now_ns: int) -> None:
        topic_len = (buf[start] << 8) | buf[start + 1]
        body = start + 2 + topic_len
        if first & 0x06:
            out.append(b"\x40\x02" + buf[body:body + 2])
            body += 2
        if self.tally.record:
            self.tally.latency(buf[body:body + STAMP_LEN], now_ns)

    def _control(self, first: int, body: bytes, out: list[bytes], now_ns: int) -> None:
        kind = first >> 4
        if kind == 2:                        # CONNACK
            if len(body) < 2 or body[1] != 0:
                self.tally.errors += 1
            elif self.topic:
                out.append(mqtt_subscribe(1, self.topic, self.qos))
            else:
                self._ready(now_ns)
        elif kind == 9:                      # SUBACK
            if body[-1:] == b"\x80":
                self.tally.errors += 1
            else:
                self._ready(now_ns)
        elif kind == 4:                      # PUBACK (publisher)
            self.acks += 1
        elif kind == 13:                     # PINGRESP
            self.pings += 1

    def _ready(self, now_ns: int) -> None:
        if not self.ready:
            self.ready = True
            self.tally.became_ready(now_ns)
