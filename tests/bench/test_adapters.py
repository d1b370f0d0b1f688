"""bench/adapters.py: the three client sessions, fed the bytes their servers send."""

from __future__ import annotations

import struct
import time

from bench.adapters import (
    MqttSession,
    NatsSession,
    PushwireSession,
    Tally,
    mqtt_connect,
    mqtt_publish,
    mqtt_subscribe,
    nats_pub,
    stamp,
    stamped_ns,
)
from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op


def push(message_id: int, data: bytes = b"x",
         kind: wire_pb2.Push.Kind = wire_pb2.Push.UNICAST) -> bytes:
    body = wire_pb2.Push(id=message_id, app="a", data=data, kind=kind).SerializeToString()
    return wire.encode(Op.PUSH, 0, body)


def auth_reply() -> bytes:
    return wire.encode(Op.AUTH_REPLY, 1,
                       wire_pb2.AuthReply(session_id="s", heartbeat_s=60).SerializeToString())


def test_stamp_carries_the_send_time_and_has_the_size() -> None:
    payload = stamp(256, now_ns=123)
    assert len(payload) == 256 and stamped_ns(payload) == 123
    assert stamped_ns(b"no stamp here, just text") == 0


# --- pushwire ---------------------------------------------------------------------------------

def test_pushwire_auths_and_is_ready_on_auth_reply() -> None:
    tally = Tally()
    session = PushwireSession(tally, "a", "u1", "d1", "tok")
    [packet] = list(wire.decode(session.opening()[0]))
    auth = wire_pb2.Auth.FromString(packet.body)
    assert packet.op == Op.AUTH and (auth.app, auth.uid, auth.device, auth.token) == \
        ("a", "u1", "d1", "tok")
    assert session.on_message(auth_reply(), 5) == []
    assert session.ready and tally.ready == 1 and tally.ready_ns == 5


def test_pushwire_asks_for_its_heartbeat_and_sends_one_once_authenticated() -> None:
    session = PushwireSession(Tally(), "a", "u1", "d1", "tok", heartbeat_s=240)
    [packet] = list(wire.decode(session.opening()[0]))
    assert wire_pb2.Auth.FromString(packet.body).heartbeat_s == 240
    assert session.heartbeat() == b""                   # not before AUTH_REPLY
    session.on_message(auth_reply(), 5)
    [beat] = list(wire.decode(session.heartbeat()))
    assert beat.op == Op.HEARTBEAT


def test_pushwire_binds_topics_after_auth_and_is_ready_on_bind_reply() -> None:
    tally = Tally()
    session = PushwireSession(tally, "a", "u1", "", "tok", topics=("fan",))
    [bind] = session.on_message(auth_reply(), 1)
    [packet] = list(wire.decode(bind))
    assert packet.op == Op.BIND and list(wire_pb2.Bind.FromString(packet.body).topics) == ["fan"]
    assert not session.ready
    session.on_message(wire.encode(Op.BIND_REPLY, 2, b""), 2)
    assert session.ready and tally.ready == 1


def test_pushwire_counts_every_push_inside_a_batch_without_acking() -> None:
    tally = Tally()
    session = PushwireSession(tally, "a", "u1", "", "tok")
    session.on_message(push(1), 10)
    batch = wire.encode_batch([push(2), push(3), wire.encode(Op.HEARTBEAT_REPLY, 0), push(4)])
    assert session.on_message(batch, 20) == []
    assert tally.deliveries == 4 and tally.first_ns == 10 and tally.last_ns == 20


def test_pushwire_acks_unicast_ids_and_records_latency() -> None:
    tally = Tally(record=True)
    session = PushwireSession(tally, "a", "u1", "", "tok", ack=True)
    sent = time.monotonic_ns()
    batch = wire.encode_batch([push(7, stamp(64, sent)), push(8, stamp(64, sent)),
                               push(9, b"t", wire_pb2.Push.TOPIC)])
    [ack] = session.on_message(batch, sent + 2_000_000)
    [packet] = list(wire.decode(ack))
    assert packet.op == Op.ACK and list(wire_pb2.Ack.FromString(packet.body).ids) == [7, 8]
    assert tally.deliveries == 3 and tally.latencies == [2_000_000, 2_000_000]


def test_pushwire_acks_a_copy_again_but_neither_counts_nor_times_it() -> None:
    """A redelivered or reloaded message arrives twice; the SDKs drop the copy, so the bench
    must not count it as a delivery nor take its (old) send time as a latency."""
    tally = Tally(record=True)
    session = PushwireSession(tally, "a", "u1", "", "tok", ack=True)
    sent = time.monotonic_ns()
    acks = [session.on_message(push(7, stamp(64, sent)), sent + 1_000),
            session.on_message(wire.encode_batch([push(7, stamp(64, sent)),
                                                  push(8, stamp(64, sent))]), sent + 9_000)]
    acked = [[list(wire_pb2.Ack.FromString(p.body).ids) for p in wire.decode(a[0])] for a in acks]
    assert acked == [[[7]], [[7, 8]]]
    assert (tally.deliveries, tally.duplicates) == (2, 1)
    assert tally.latencies == [1_000, 9_000]


def test_per_message_tally_keeps_each_messages_first_and_last_arrival() -> None:
    tally = Tally(record=True, per_message=True)
    one, two = (PushwireSession(tally, "a", f"u{i}", "", "tok", topics=("fan",)) for i in (1, 2))
    first, second = stamp(64, 1_000), stamp(64, 2_000)
    topic = wire_pb2.Push.TOPIC
    one.on_message(push(0, first, topic), 1_500)
    two.on_message(wire.encode_batch([push(0, first, topic), push(0, second, topic)]), 2_600)
    one.on_message(push(0, second, topic), 2_900)
    assert tally.arrivals == {1_000: [1_500, 2_600, 2], 2_000: [2_600, 2_900, 2]}
    assert tally.deliveries == 4 and tally.latencies == []
    tally.reset()
    assert tally.arrivals == {} and tally.per_message


def test_pushwire_storm_session_is_ready_on_its_first_push() -> None:
    tally = Tally()
    session = PushwireSession(tally, "a", "s1", "", "tok", ack=True, ready_on_push=True)
    session.on_message(auth_reply(), 1)
    assert not session.ready
    session.on_message(push(1), 2)
    assert session.ready and tally.ready == 1 and tally.ready_ns == 2


def test_pushwire_counts_errors() -> None:
    tally = Tally()
    session = PushwireSession(tally, "a", "u1", "", "tok")
    session.on_message(wire.encode(Op.ERROR, 0, wire_pb2.Error(code=1).SerializeToString()), 1)
    assert tally.errors == 1


# --- NATS --------------------------------------------------------------------------------------

def test_nats_connects_subscribes_and_pings_on_info_then_ready_on_pong() -> None:
    tally = Tally()
    session = NatsSession(tally, "fan")
    [hello] = session.on_message(b'INFO {"server_id":"x"}\r\n', 1)
    assert hello.startswith(b"CONNECT {") and hello.endswith(b"\r\nSUB fan 1\r\nPING\r\n")
    assert not session.ready
    session.on_message(b"PONG\r\n", 2)
    assert session.ready and tally.ready == 1


def test_nats_counts_msgs_split_anywhere_and_answers_ping() -> None:
    tally = Tally(record=True)
    session = NatsSession(tally, "fan")
    payload = stamp(40, now_ns=1_000)
    stream = (b"MSG fan 1 40\r\n" + payload + b"\r\nPING\r\nMSG fan 1 reply.to 40\r\n"
              + payload + b"\r\n")
    replies: list[bytes] = []
    for cut in range(0, len(stream), 7):
        replies += session.on_message(stream[cut:cut + 7], 5_000)
    assert tally.deliveries == 2 and replies == [b"PONG\r\n"]
    assert tally.latencies == [4_000, 4_000]


def test_nats_pub_frames_the_payload() -> None:
    assert nats_pub("u.1", b"hey") == b"PUB u.1 3\r\nhey\r\n"


def test_nats_err_counts() -> None:
    tally = Tally()
    NatsSession(tally, "fan").on_message(b"-ERR 'Slow Consumer'\r\n", 1)
    assert tally.errors == 1


# --- MQTT -------------------------------------------------------------------------------------

def test_mqtt_connect_packet_is_3_1_1_clean_session() -> None:
    assert mqtt_connect("c1") == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02c1"


def test_mqtt_subscribes_on_connack_and_is_ready_on_suback() -> None:
    tally = Tally()
    session = MqttSession(tally, "c1", "fan", qos=1)
    assert session.opening() == [mqtt_connect("c1")]
    [sub] = session.on_message(b"\x20\x02\x00\x00", 1)
    assert sub == mqtt_subscribe(1, "fan", 1) == b"\x82\x08\x00\x01\x00\x03fan\x01"
    session.on_message(b"\x90\x03\x00\x01\x01", 2)
    assert session.ready and tally.ready == 1


def test_mqtt_refused_connect_or_subscription_counts_as_error() -> None:
    tally = Tally()
    MqttSession(tally, "c1", "fan").on_message(b"\x20\x02\x00\x05", 1)
    MqttSession(tally, "c2", "fan").on_message(b"\x90\x03\x00\x01\x80", 1)
    assert tally.errors == 2 and tally.ready == 0


def test_mqtt_publisher_is_ready_on_connack_and_counts_pubacks() -> None:
    tally = Tally()
    session = MqttSession(tally, "pub", "")
    assert session.on_message(b"\x20\x02\x00\x00", 1) == []
    assert session.ready
    session.on_message(b"\x40\x02\x00\x01\x40\x02\x00\x02\xd0\x00", 2)
    assert session.acks == 2 and session.pings == 1


def test_mqtt_counts_publishes_with_long_lengths_split_anywhere_and_pubacks_qos1() -> None:
    tally = Tally(record=True)
    session = MqttSession(tally, "c1", "u/1", qos=1)
    payload = stamp(300, now_ns=10)          # remaining length > 127: two-byte varint
    stream = mqtt_publish("u/1", payload, qos=1, packet_id=513) + mqtt_publish("u/1", payload)
    replies: list[bytes] = []
    for cut in range(0, len(stream), 5):
        replies += session.on_message(stream[cut:cut + 5], 110)
    assert tally.deliveries == 2
    assert replies == [b"\x40\x02" + struct.pack("!H", 513)]
    assert tally.latencies == [100, 100]
