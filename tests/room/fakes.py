"""Stand-ins shared by the room's unit tests: a connection, register and saver that record
what the room asked of them (no socket, no process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushwire_protocol.errors import Kicked
from services.kit.pb import common_pb2, saver_pb2
from services.room.state import ConnState


@dataclass(eq=False)
class Conn:
    """A connection as delivery, sessions and the indexes use it."""

    session_id: str
    app: str = "a"
    uid: str = "u1"
    device: str = "d1"
    state: ConnState | None = None
    closed: bool = False
    peer: str = "203.0.113.1"
    origin: str = ""                    # the handshake Origin ("" without)
    alive: bool = True
    pushed: list[int] = field(default_factory=list)
    code: int = 0

    def push(self, message: common_pb2.Message) -> bool:
        if self.closed:
            return False
        self.pushed.append(message.id)
        return True

    def close(self, code: int, reason: str = "", *, error_code: int = 0) -> None:
        self.closed, self.code = True, code


@dataclass
class Register:
    """register as the room uses it: online (awaited, refuses `kicked` uids or "app/uid"s),
    offline_nowait."""

    asked: list[tuple[str, int]] = field(default_factory=list)     # (app, token issue time)
    onlines: list[tuple[common_pb2.Session, int]] = field(default_factory=list)
    offline: list[common_pb2.Session] = field(default_factory=list)
    kicked: set[str] = field(default_factory=set)
    full: bool = False

    async def online(self, session: common_pb2.Session, issued: int = 0) -> None:
        self.asked.append((session.app, issued))
        if {session.uid, f"{session.app}/{session.uid}"} & self.kicked:
            raise Kicked("kicked")
        self.onlines.append((session, issued))

    def offline_nowait(self, session: common_pb2.Session) -> bool:
        if self.full:
            return False
        self.offline.append(session)
        return True


@dataclass
class Saver:
    """saver as the room uses it: a store of messages, ACKs recorded."""

    stored: list[common_pb2.Message] = field(default_factory=list)
    loads: int = 0
    acks: list[saver_pb2.AckItem] = field(default_factory=list)
    pending_asked: list[tuple[str, str]] = field(default_factory=list)
    delivered: list[tuple[int, str]] = field(default_factory=list)   # written outside a load

    @property
    def acked(self) -> list[int]:
        return [a.id for a in self.acks]

    def inbox(self, item: saver_pb2.LoadItem) -> saver_pb2.Inbox:
        mine = [m for m in self.stored if m.app == item.app and m.uid == item.uid
                and m.id not in self.acked]
        return saver_pb2.Inbox(messages=mine[:item.limit or None],
                               remaining=max(len(mine) - (item.limit or len(mine)), 0))

    async def load(self, item: saver_pb2.LoadItem) -> saver_pb2.Inbox:
        self.loads += 1
        return self.inbox(item)

    async def load_many(self, items: list[saver_pb2.LoadItem]) -> list[saver_pb2.Inbox]:
        self.loads += len(items)
        return [self.inbox(i) for i in items]

    async def pending_of(self, users: list[tuple[str, str]], min_age_ms: int) -> list[int]:
        self.pending_asked += users
        return [sum(1 for m in self.stored if (m.app, m.uid) == user and m.id not in self.acked)
                for user in users]

    def delivered_nowait(self, message: common_pb2.Message, session_id: str) -> bool:
        self.delivered.append((message.id, session_id))
        return True

    def ack_nowait(self, item: saver_pb2.AckItem) -> bool:
        self.acks.append(item)
        return True

    async def broadcasts(self, app: str, after: int, limit: int) -> list[common_pb2.Message]:
        return []
