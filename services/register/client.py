"""How other services talk to register: batched pipes to the owner of each user.

Overflow policies: Online rejects (the connecting client retries with backoff), Offline
retries (a lost offline leaves a ghost session), Lookup rejects (the caller reports 503; a
stored message is still delivered on the next connect), Revoke retries (a kick must stick).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pushwire_protocol.errors import Unavailable, from_code
from services.kit.discovery import Discovery
from services.kit.pb import common_pb2, register_pb2, register_pb2_grpc
from services.kit.rpc.grpcio import Channels, no_results, sender, translate_call
from services.kit.rpc.peers import Peers, user_key
from services.kit.rpc.pipe import Overflow, PipeOptions, PipeSet

Session = common_pb2.Session


class RegisterClient:
    def __init__(self, discovery: Discovery, channels: Channels, options: PipeOptions) -> None:
        self.peers = Peers(discovery, "register")
        self._channels = channels
        self._wait_s = options.timeout_s        # for a register while none is in view
        retrying = replace(options, overflow=Overflow.RETRY)
        stub = register_pb2_grpc.RegisterStub
        batch = register_pb2.SessionBatch
        self._online: PipeSet[tuple[Session, int], common_pb2.Status] = PipeSet(
            "register.online", sender(
                channels, stub, "Online",
                lambda items: batch(sessions=[s for s, _ in items],
                                    token_issued_s=[issued for _, issued in items]),
                lambda reply, _n: list(reply.results)), options)
        self._revoke: PipeSet[register_pb2.RevokeItem, common_pb2.Status] = PipeSet(
            "register.revoke", sender(channels, stub, "Revoke",
                                      lambda items: register_pb2.RevokeBatch(items=items),
                                      lambda reply, _n: list(reply.results)), retrying)
        self._offline: PipeSet[Session, None] = PipeSet("register.offline", sender(
            channels, stub, "Offline", lambda items: batch(sessions=items), no_results), retrying)
        self._lookup: PipeSet[common_pb2.UserRef, list[Session]] = PipeSet(
            "register.lookup", sender(channels, stub, "Lookup",
                                      lambda items: register_pb2.LookupRequest(users=items),
                                      lambda reply, _n: [list(r.sessions) for r in reply.results]),
            options)

    def _stub(self, target: str) -> register_pb2_grpc.RegisterStub:
        return register_pb2_grpc.RegisterStub(self._channels.get(target))

    async def online(self, session: Session, token_issued_s: int = 0) -> None:
        """Register a session; returns once its owner stored it. Raises Kicked when the
        session's token (`iat` = token_issued_s) predates a kick of the user or device."""
        target = self.peers.owner(user_key(session.app, session.uid))
        status = await self._online.call(target, (session, token_issued_s))
        if status.code:
            raise from_code(status.code, status.detail)

    async def revoke(self, item: register_pb2.RevokeItem) -> None:
        """Leave a kick mark; returns once stored (before the rooms close the sessions, so a
        reconnect racing the kick is refused). Raises BadRequest for a bad uid or device,
        LimitError when the app's kick-mark quota is full, StoreError when the marks cannot
        be stored: nothing was kept then."""
        status = await self._revoke.call(self.peers.owner(user_key(item.app, item.uid)), item)
        if status.code:
            raise from_code(status.code, status.detail)

    async def offline(self, session: Session) -> None:
        """Unregister a session (fire and forget, retried)."""
        await self._offline.post(self.peers.owner(user_key(session.app, session.uid)), session)

    def offline_nowait(self, session: Session) -> bool:
        """`offline` from a protocol callback; False when dropped (queue full, no register)."""
        try:
            target = self.peers.owner(user_key(session.app, session.uid))
        except Unavailable:
            return False
        return self._offline.post_nowait(target, session)

    async def lookup(self, app: str, uids: Sequence[str]) -> list[list[Session]]:
        """Sessions of each uid, in order. While discovery shows no register (one restarting),
        waits for one up to the pipe timeout: a push made then still reaches online users."""
        pairs = [(await self.peers.owner_soon(user_key(app, uid), self._wait_s),
                  common_pb2.UserRef(app=app, uid=uid)) for uid in uids]
        return await self._lookup.call_many(pairs)

    async def flush(self, target: str, room: str, sessions: list[Session], as_of_ms: int,
                    timeout: float) -> None:
        """Re-state all sessions of `room` owned by `target` (cold standby)."""
        request = register_pb2.FlushRequest(room=room, sessions=sessions, as_of_ms=as_of_ms)
        await translate_call(target, self._stub(target).Flush(request, timeout=timeout))

    async def count(self, app: str, timeout: float) -> tuple[int, int]:
        """(sessions, users) of `app` over every register instance."""
        total = [0, 0]
        for target in self.peers.addresses():
            reply = await translate_call(target, self._stub(target).Count(
                register_pb2.CountRequest(app=app), timeout=timeout))
            total[0] += reply.sessions
            total[1] += reply.users
        return total[0], total[1]

    async def drain(self, timeout_s: float) -> None:
        """Send what is queued (offline events at shutdown)."""
        await self._offline.drain(timeout_s)

    async def close(self) -> None:
        for pipes in (self._online, self._offline, self._lookup, self._revoke):
            await pipes.close()
