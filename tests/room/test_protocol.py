"""The sans-I/O client protocol: bytes and time in, events and bytes out. No sockets."""

from __future__ import annotations

import pytest

from pushwire_protocol import wire
from pushwire_protocol.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    Kicked,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    PushwireError,
    StoreError,
    Unavailable,
)
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit.discovery.models import AppConfig
from services.room.config import RoomConfig
from services.room.protocol import (
    DEFAULT_BOUNDS,
    AckReceived,
    AuthRequested,
    BindRequested,
    Bounds,
    ClientSession,
    CloseCode,
    HeartbeatReceived,
    ProtocolViolated,
    State,
    Timeouts,
    UnbindRequested,
    UpReceived,
    Violation,
    close_code_for,
    close_code_of,
    negotiate_heartbeat,
)

TIMEOUTS = Timeouts(auth_s=10.0, heartbeat_factor=1.5, heartbeat_grace_s=5.0, close_s=3.0)
AUTH = wire_pb2.Auth(app="app1", uid="u1", device="d1", token="t", heartbeat_s=60)


def pkt(op: Op, seq: int = 0, body: bytes = b"") -> bytes:
    return wire.encode(op, seq, body)


def auth_message(seq: int = 1) -> bytes:
    return pkt(Op.AUTH, seq, AUTH.SerializeToString())


def open_session(now: float = 100.0, heartbeat_s: int = 60,
                 bounds: Bounds = DEFAULT_BOUNDS) -> ClientSession:
    session = ClientSession(TIMEOUTS, now, bounds)
    session.receive(auth_message(), now)
    session.auth_ok(1, wire_pb2.AuthReply(session_id="s1", heartbeat_s=heartbeat_s), now)
    return session


def only(packet: bytes) -> wire.Packet:
    (one,) = list(wire.decode(packet))
    return one


# --- close codes and negotiation (docs/protocol.md §5, §7) ---------------------------------


def test_only_the_4000_range_tells_clients_to_reconnect() -> None:
    assert {c for c in CloseCode if c.reconnect} == {
        CloseCode.GOING_AWAY, CloseCode.SLOW_CONSUMER, CloseCode.HEARTBEAT_TIMEOUT,
        CloseCode.MOVED, CloseCode.OVERLOADED, CloseCode.AUTH_TIMEOUT}
    assert all(4100 <= c < 4200 for c in CloseCode if not c.reconnect)


@pytest.mark.parametrize(("exc", "code"), [
    (AuthError("bad token signature"), CloseCode.AUTH_FAILED),
    (AuthError("token expired"), CloseCode.TOKEN_EXPIRED),
    (Kicked("kicked"), CloseCode.KICKED),
    (LimitError("too many connections from your address"), CloseCode.LIMIT),
    (NotFound("unknown app"), CloseCode.ACCESS_DENIED),
    (ProtocolError("bad field"), CloseCode.PROTOCOL_VIOLATION),
    (Unavailable("register down"), CloseCode.OVERLOADED),
    (Overloaded("accept rate"), CloseCode.OVERLOADED),
    (StoreError("redis"), CloseCode.GOING_AWAY),
    (BadRequest("?"), CloseCode.GOING_AWAY),
])
def test_refusals_map_to_one_close_code(exc: PushwireError, code: CloseCode) -> None:
    assert close_code_for(exc) == code


@pytest.mark.parametrize(("proposed", "agreed"), [(0, 240), (5, 30), (30, 30), (100, 100),
                                                    (9999, 600)])
def test_heartbeat_is_clamped_to_the_apps_bounds(proposed: int, agreed: int) -> None:
    app = AppConfig(id="app1", heartbeat_min_s=30, heartbeat_default_s=240, heartbeat_max_s=600)
    assert negotiate_heartbeat(proposed, app) == agreed


# --- before AUTH (§4) ----------------------------------------------------------------------


def test_auth_is_the_first_request() -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    assert session.receive(auth_message(seq=5), 1.0) == [AuthRequested(5, AUTH)]
    assert session.state is State.AUTHENTICATING


def test_heartbeat_is_allowed_before_and_during_auth() -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    assert session.receive(pkt(Op.HEARTBEAT, 3), 1.0) == [HeartbeatReceived(3)]
    session.receive(auth_message(), 1.0)
    assert session.receive(pkt(Op.HEARTBEAT, 4), 1.0) == [HeartbeatReceived(4)]


@pytest.mark.parametrize("op", [Op.ACK, Op.UP, Op.BIND, Op.UNBIND, Op.PUSH, Op.AUTH_REPLY])
def test_anything_else_before_auth_is_a_violation(op: Op) -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    (event,) = session.receive(pkt(op, 1), 1.0)
    assert event == ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, f"{op.name} before AUTH",
                                     Violation.OP)


def test_requests_while_authenticating_are_violations() -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    session.receive(auth_message(), 1.0)
    for message in (auth_message(), pkt(Op.ACK, 2)):
        (event,) = session.receive(message, 1.0)
        assert isinstance(event, ProtocolViolated)
        assert event.reason.endswith("while authenticating")


def test_auth_ok_opens_with_the_negotiated_heartbeat_and_echoes_seq() -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    session.receive(auth_message(seq=9), 1.0)
    reply = wire_pb2.AuthReply(session_id="s1", heartbeat_s=45, resume_token="r", room="room1")
    sent = only(session.auth_ok(9, reply, 2.0))
    assert (sent.op, sent.seq, wire_pb2.AuthReply.FromString(sent.body)) == (
        Op.AUTH_REPLY, 9, reply)
    assert (session.state, session.heartbeat_s) == (State.OPEN, 45)


def test_auth_ok_refuses_a_reply_without_heartbeat_or_out_of_turn() -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    with pytest.raises(ValueError, match="while await_auth"):
        session.auth_ok(1, wire_pb2.AuthReply(session_id="s1", heartbeat_s=30), 1.0)
    session.receive(auth_message(), 1.0)
    with pytest.raises(ValueError, match="heartbeat_s"):
        session.auth_ok(1, wire_pb2.AuthReply(session_id="s1"), 1.0)
    assert session.state is State.AUTHENTICATING


# --- OPEN (§3, §6) -------------------------------------------------------------------------


def test_open_session_turns_requests_into_events() -> None:
    session = open_session()
    up = wire_pb2.Up(app="app1", type="chat", body=b"x")
    bind = wire_pb2.Bind(app="app1", topics=["t1"])
    messages = [pkt(Op.ACK, 1, wire_pb2.Ack(app="app1", ids=[3, 4]).SerializeToString()),
                pkt(Op.UP, 2, up.SerializeToString()), pkt(Op.BIND, 3, bind.SerializeToString()),
                pkt(Op.UNBIND, 4, bind.SerializeToString()), pkt(Op.HEARTBEAT, 5)]
    events = [event for message in messages for event in session.receive(message, 101.0)]
    assert events == [AckReceived(1, "app1", (3, 4)), UpReceived(2, up), BindRequested(3, bind),
                      UnbindRequested(4, bind), HeartbeatReceived(5)]


def test_an_ack_without_ids_is_ignored() -> None:
    session = open_session()
    assert session.receive(pkt(Op.ACK, 1, wire_pb2.Ack(app="app1").SerializeToString()), 1) == []


def test_batch_yields_one_event_per_packet() -> None:
    session = open_session()
    ack = wire_pb2.Ack(app="app1", ids=[7]).SerializeToString()
    batch = wire.encode_batch([pkt(Op.HEARTBEAT, 1), pkt(Op.ACK, 2, ack)])
    assert session.receive(batch, 101.0) == [HeartbeatReceived(1), AckReceived(2, "app1", (7,))]


def test_a_violation_ends_the_events_of_its_message() -> None:
    session = open_session()
    ack = wire_pb2.Ack(app="app1", ids=[7]).SerializeToString()
    batch = wire.encode_batch([pkt(Op.ACK, 1, ack), pkt(Op.PUSH, 2), pkt(Op.HEARTBEAT, 3)])
    assert session.receive(batch, 101.0) == [
        AckReceived(1, "app1", (7,)),
        ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, "PUSH is not a client op", Violation.OP)]


@pytest.mark.parametrize(("message", "reason", "violation"), [
    (pkt(Op.HEARTBEAT, 1, b"abcd")[:-2], "truncated packet body", Violation.MALFORMED),
    (pkt(Op.AUTH_REPLY, 1), "AUTH_REPLY is not a client op", Violation.OP),
    (pkt(Op.AUTH, 1), "AUTH while open", Violation.OP),
    (pkt(Op.UP, 1, b"\xff\xff\xff"), "bad packet body", Violation.MALFORMED),
    (wire.encode(99, 1), "unknown op 99", Violation.MALFORMED),
    (b"", "truncated packet header", Violation.MALFORMED),
    (wire.encode_batch([wire.encode_batch([])]), "nested BATCH", Violation.MALFORMED),
])
def test_malformed_or_misplaced_packets_are_violations(message: bytes, reason: str,
                                                       violation: Violation) -> None:
    session = open_session()
    assert session.receive(message, 101.0) == [
        ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, reason, violation)]


# --- strictness and bounds (§2, §9) ----------------------------------------------------------

BOUNDS = Bounds(ack_max_ids=4, batch_max_packets=3, packet_rate_per_s=10.0, packet_burst=5,
                ack_id_rate_per_s=4.0, ack_id_burst=8, pre_auth_packets=3)


def ack(*ids: int, seq: int = 0) -> bytes:
    return pkt(Op.ACK, seq, wire_pb2.Ack(app="app1", ids=ids).SerializeToString())


def violation_of(events: list[object]) -> Violation | None:
    last = events[-1] if events else None
    return last.violation if isinstance(last, ProtocolViolated) else None


def test_two_packets_without_batch_are_a_violation_and_neither_is_handled() -> None:
    session = open_session()
    (event,) = session.receive(pkt(Op.HEARTBEAT, 1) + pkt(Op.HEARTBEAT, 2), 101.0)
    assert event == ProtocolViolated(
        CloseCode.PROTOCOL_VIOLATION,
        "16 bytes after the packet: one packet per message, several only in a BATCH",
        Violation.UNBATCHED)


def with_version(packet: bytes, ver: int) -> bytes:
    return packet[:6] + ver.to_bytes(2, "big") + packet[8:]


@pytest.mark.parametrize("message", [
    with_version(pkt(Op.HEARTBEAT, 1), 99),
    with_version(wire.encode_batch([pkt(Op.HEARTBEAT, 1)]), 99),
    wire.encode_batch([pkt(Op.HEARTBEAT, 1), with_version(pkt(Op.HEARTBEAT, 2), 99)]),
], ids=["packet", "batch", "inside a batch"])
def test_another_version_is_refused_with_4108(message: bytes) -> None:
    (event,) = open_session().receive(message, 101.0)
    assert event == ProtocolViolated(CloseCode.UNSUPPORTED_VERSION, "unsupported protocol "
                                     "version 99, this room speaks version 1", Violation.VERSION)


def test_a_message_answers_at_most_one_heartbeat() -> None:
    session = open_session()
    batch = wire.encode_batch([pkt(Op.HEARTBEAT, seq) for seq in (4, 5, 6)])
    assert session.receive(batch, 101.0) == [HeartbeatReceived(4)]


def test_a_batch_over_its_bound_is_refused_whole() -> None:
    session = open_session(bounds=BOUNDS)
    assert session.receive(wire.encode_batch([pkt(Op.HEARTBEAT, 1)] * 3), 101.0) == [
        HeartbeatReceived(1)]
    big = wire.encode_batch([pkt(Op.HEARTBEAT, 2)] + [ack(1)] * 3)
    assert session.receive(big, 101.0) == [ProtocolViolated(
        CloseCode.LIMIT, "more than 3 packets in one BATCH", Violation.BATCH_PACKETS)]


def test_an_ack_carries_at_most_its_bound_of_ids_deduplicated() -> None:
    session = open_session(bounds=BOUNDS)
    assert session.receive(ack(9, 3, 9, 3, seq=1), 101.0) == [AckReceived(1, "app1", (9, 3))]
    assert session.receive(ack(1, 2, 3, 4, 5), 101.0) == [ProtocolViolated(
        CloseCode.LIMIT, "more than 4 ids in one ACK", Violation.ACK_IDS)]


def test_an_ack_body_too_big_for_its_bound_is_refused_unread() -> None:
    assert BOUNDS.ack_max_body == 11 * 4 + 1024
    body = wire_pb2.Ack(app="x" * 2000, ids=[1]).SerializeToString()
    assert violation_of(open_session(bounds=BOUNDS).receive(pkt(Op.ACK, 1, body), 101.0)) \
        is Violation.ACK_IDS
    # 1024 ids of 2**63 (10-byte varints) and a 128-character app fit the default bound.
    body = wire_pb2.Ack(app="a" * 128, ids=[2**63 + i for i in range(1024)]).SerializeToString()
    (event,) = open_session().receive(pkt(Op.ACK, 1, body), 101.0)
    assert isinstance(event, AckReceived) and len(event.ids) == 1024


def test_packets_beyond_the_rate_close_after_the_burst() -> None:
    session = open_session(now=100.0, bounds=BOUNDS)
    for seq in range(5):                               # the burst: 5 packets at once
        assert session.receive(pkt(Op.HEARTBEAT, seq), 100.0) == [HeartbeatReceived(seq)]
    assert session.receive(pkt(Op.HEARTBEAT, 5), 100.0) == [ProtocolViolated(
        CloseCode.LIMIT, "more than 10 packets per second", Violation.PACKET_RATE)]


def test_the_packet_budget_refills_at_its_rate_and_counts_batched_packets() -> None:
    session = open_session(now=100.0, bounds=BOUNDS)
    three = wire.encode_batch([pkt(Op.HEARTBEAT, 1)] * 3)
    assert violation_of(session.receive(three, 100.0)) is None       # 5 - 3 = 2 left
    assert violation_of(session.receive(three, 100.05)) is Violation.PACKET_RATE  # 2.5 < 3
    session = open_session(now=100.0, bounds=BOUNDS)
    session.receive(three, 100.0)
    assert violation_of(session.receive(three, 100.125)) is None      # 2 + 1.25 >= 3
    for second in range(10):                                          # 10/s for 10 s: fine
        for tenth in range(10):
            now = 101.0 + second + tenth / 10
            assert violation_of(session.receive(pkt(Op.HEARTBEAT, 1), now)) is None


def test_ack_ids_beyond_their_rate_close_after_the_burst() -> None:
    session = open_session(now=100.0, bounds=BOUNDS)
    assert violation_of(session.receive(ack(1, 2, 3, 4), 100.0)) is None
    assert violation_of(session.receive(ack(5, 6, 7, 8), 100.0)) is None     # 8 ids: the burst
    assert session.receive(ack(9), 100.0) == [ProtocolViolated(
        CloseCode.LIMIT, "more than 4 ACK ids per second", Violation.ACK_RATE)]
    session = open_session(now=100.0, bounds=BOUNDS)
    session.receive(ack(1, 2, 3, 4), 100.0)
    session.receive(ack(5, 6, 7, 8), 100.0)
    assert violation_of(session.receive(ack(9, 10, 11, 12), 101.0)) is None  # 1 s: 4 more


def test_duplicates_do_not_spend_the_ack_id_budget() -> None:
    session = open_session(now=100.0, bounds=BOUNDS)
    for _ in range(4):
        assert violation_of(session.receive(ack(1, 1, 1, 1), 100.0)) is None
    assert session.ack_tokens == 4


def test_a_batch_before_auth_reply_is_a_protocol_violation() -> None:
    session = ClientSession(TIMEOUTS, 0.0)
    assert session.receive(wire.encode_batch([pkt(Op.HEARTBEAT, 1)]), 1.0) == [
        ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, "BATCH before AUTH_REPLY",
                         Violation.PRE_AUTH_BATCH)]
    session = ClientSession(TIMEOUTS, 0.0)
    session.receive(auth_message(), 1.0)                              # while authenticating
    assert violation_of(session.receive(wire.encode_batch([]), 1.0)) is Violation.PRE_AUTH_BATCH


def test_packets_before_auth_reply_have_a_fixed_allowance() -> None:
    session = ClientSession(TIMEOUTS, 0.0, BOUNDS)
    assert session.receive(pkt(Op.HEARTBEAT, 1), 1.0) == [HeartbeatReceived(1)]
    session.receive(auth_message(), 2.0)
    assert session.receive(pkt(Op.HEARTBEAT, 2), 9.0) == [HeartbeatReceived(2)]
    assert session.receive(pkt(Op.HEARTBEAT, 3), 9.9) == [ProtocolViolated(      # no refill
        CloseCode.LIMIT, "more than 3 packets before AUTH_REPLY", Violation.PRE_AUTH_PACKETS)]


def test_auth_reply_grants_the_full_budgets() -> None:
    session = ClientSession(TIMEOUTS, 0.0, BOUNDS)
    session.receive(auth_message(), 1.0)
    session.receive(pkt(Op.HEARTBEAT, 2), 1.0)
    session.auth_ok(1, wire_pb2.AuthReply(session_id="s1", heartbeat_s=60), 5.0)
    assert (session.tokens, session.ack_tokens, session.stamp) == (5, 8, 5.0)


@pytest.mark.parametrize(("violation", "code"), [
    (Violation.MALFORMED, CloseCode.PROTOCOL_VIOLATION),
    (Violation.UNBATCHED, CloseCode.PROTOCOL_VIOLATION),
    (Violation.OP, CloseCode.PROTOCOL_VIOLATION),
    (Violation.WEBSOCKET, CloseCode.PROTOCOL_VIOLATION),
    (Violation.PRE_AUTH_BATCH, CloseCode.PROTOCOL_VIOLATION),
    (Violation.VERSION, CloseCode.UNSUPPORTED_VERSION),
    (Violation.TOO_BIG, CloseCode.LIMIT),
    (Violation.PRE_AUTH_PACKETS, CloseCode.LIMIT),
    (Violation.BATCH_PACKETS, CloseCode.LIMIT),
    (Violation.PACKET_RATE, CloseCode.LIMIT),
    (Violation.ACK_IDS, CloseCode.LIMIT),
    (Violation.ACK_RATE, CloseCode.LIMIT),
])
def test_every_violation_has_one_close_code(violation: Violation, code: CloseCode) -> None:
    assert close_code_of(violation) == code


def test_bounds_come_from_the_room_config() -> None:
    config = RoomConfig(ack_max_ids=10, batch_max_packets=2, packet_rate_per_s=3.0,
                        packet_burst=4, ack_id_rate_per_s=5.0, ack_id_burst=60,
                        pre_auth_packets=7)
    assert Bounds.of(config) == Bounds(10, 2, 3.0, 4, 5.0, 60, 7, 4096)
    assert Bounds.of(RoomConfig()) == DEFAULT_BOUNDS


@pytest.mark.parametrize("bad", [{"ack_max_ids": 0}, {"packet_rate_per_s": 0.0},
                                 {"packet_burst": 10, "batch_max_packets": 11},
                                 {"ack_id_burst": 100, "ack_max_ids": 101},
                                 {"pre_auth_max_frame": 1000},
                                 {"pre_auth_max_frame": 8192, "max_frame": 4096}])
def test_bounds_that_cannot_work_are_refused_at_start(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RoomConfig(**bad).validate()  # type: ignore[arg-type]


def test_default_bounds_keep_one_client_far_from_filling_saver_ack() -> None:
    # docs/protocol.md §9: ids one client can put on saver.ack within t seconds.
    bounds, queue = DEFAULT_BOUNDS, RoomConfig().rpc_queue
    assert bounds.ack_id_burst + bounds.ack_id_rate_per_s * 1 <= 0.3 * queue
    assert bounds.ack_max_ids >= 4 * 256                               # the SDK's ACK_MAX


# --- deadlines (§4, §5) --------------------------------------------------------------------


def test_auth_deadline_does_not_move_with_heartbeats() -> None:
    session = ClientSession(TIMEOUTS, 100.0)
    session.receive(pkt(Op.HEARTBEAT, 1), 108.0)
    assert session.deadline() == 110.0
    assert not session.expired(109.9)
    assert session.expired(110.0)
    assert session.timeout_code() == CloseCode.AUTH_TIMEOUT


def test_heartbeat_deadline_follows_the_last_activity() -> None:
    session = open_session(now=100.0, heartbeat_s=60)
    assert session.deadline() == 100.0 + 60 * 1.5 + 5.0
    session.receive(pkt(Op.HEARTBEAT, 1), 150.0)
    assert session.deadline() == 150.0 + 95.0
    assert session.pinged(200.0) is None         # a WebSocket ping counts too
    assert not session.expired(294.9)
    assert session.expired(295.0)
    assert session.timeout_code() == CloseCode.HEARTBEAT_TIMEOUT


def test_closed_session_is_due_at_the_close_timeout() -> None:
    session = open_session(now=100.0)
    session.close(CloseCode.GOING_AWAY, "bye", 120.0)
    assert session.deadline() == 123.0
    assert session.timeout_code() is None


# --- closing (§7) --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "error_code"), [
    (CloseCode.AUTH_FAILED, AuthError.code), (CloseCode.TOKEN_EXPIRED, AuthError.code),
    (CloseCode.PROTOCOL_VIOLATION, ProtocolError.code), (CloseCode.LIMIT, LimitError.code),
    (CloseCode.AUTH_TIMEOUT, ProtocolError.code), (CloseCode.ACCESS_DENIED, NotFound.code),
    (CloseCode.OVERLOADED, Overloaded.code), (CloseCode.UNSUPPORTED_VERSION, ProtocolError.code),
])
def test_error_closes_are_explained_by_a_fatal_error(code: CloseCode, error_code: int) -> None:
    sent = only(ClientSession(TIMEOUTS, 0.0).close(code, "why", 1.0))
    assert sent.op == Op.ERROR
    assert wire_pb2.Error.FromString(sent.body) == wire_pb2.Error(code=error_code, message="why",
                                                                  fatal=True)


def test_the_error_code_can_be_given() -> None:
    sent = only(ClientSession(TIMEOUTS, 0.0).close(CloseCode.ACCESS_DENIED, "deny", 1.0,
                                                   error_code=AuthError.code))
    assert wire_pb2.Error.FromString(sent.body).code == AuthError.code


@pytest.mark.parametrize("code", [CloseCode.KICKED, CloseCode.SUPERSEDED])
def test_kicks_are_explained_by_a_kick(code: CloseCode) -> None:
    sent = only(open_session().close(code, "go away", 101.0))
    assert (sent.op, wire_pb2.Kick.FromString(sent.body)) == (
        Op.KICK, wire_pb2.Kick(code=code, reason="go away"))


@pytest.mark.parametrize("code", [CloseCode.GOING_AWAY, CloseCode.SLOW_CONSUMER,
                                  CloseCode.HEARTBEAT_TIMEOUT, CloseCode.MOVED, 1000, 1006])
def test_other_closes_send_nothing_first(code: int) -> None:
    assert open_session().close(code, "", 101.0) == b""


def test_close_is_idempotent_and_keeps_the_first_code() -> None:
    session = open_session()
    assert session.close(CloseCode.PROTOCOL_VIOLATION, "x", 101.0)
    assert session.close(CloseCode.GOING_AWAY, "y", 102.0) == b""
    assert (session.state, session.code, session.deadline()) == (
        State.CLOSED, CloseCode.PROTOCOL_VIOLATION, 104.0)
