"""Dead letters for operators (center's admin API, docs/api.md §4): list, replay, drop.

    list    -> the newest records of an app with their ids (services/coordinator/deadletter.py)
    drop    -> take the record out of the store
    replay  -> take it out, send its `body` to its `url` as the same event (`webhook_id`),
               signed with the app's webhook secrets as they are now; 2xx: gone; anything
               else: put back, newest, with this attempt's reason, status and attempts added

Taking first makes two operators replaying one record send it once. A record taken and not
put back (the store failed meanwhile) is logged whole, so nothing is lost silently.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pushwire_protocol.errors import PushwireError
from services.coordinator.deadletter import DeadLetters, Record
from services.coordinator.webhooks import Policy, Pool, Request, Verdict, deliver
from services.kit.discovery import Discovery

log = logging.getLogger("pushwire.coordinator.replay")


@dataclass(frozen=True, slots=True)
class Resolved:
    found: bool
    delivered: bool = False
    status: int = 0
    detail: str = ""


class Replayer:
    """List, drop and replay the dead letters of this coordinator's store."""

    def __init__(self, discovery: Discovery, deadletters: DeadLetters, transport: Pool) -> None:
        self.discovery = discovery
        self.deadletters = deadletters
        self.transport = transport

    async def listed(self, app: str, limit: int) -> tuple[list[tuple[str, Record]], int]:
        """The newest `limit` records with their ids, and how many the app has."""
        return await self.deadletters.listed(app, limit), await self.deadletters.count(app)

    @property
    def store(self) -> str:
        return self.deadletters.identity

    async def resolve(self, app_id: str, record_id: str, replay: bool) -> Resolved:
        """Drop (`replay` False) or replay the record `record_id` of `app_id`."""
        record = await self.deadletters.take(app_id, record_id)
        if record is None:
            return Resolved(found=False)
        if not replay:
            log.info("dead letter %s of %s dropped", record_id, app_id)
            return Resolved(found=True)
        app = self.discovery.app(app_id)
        if app is None:
            return await self._put_back(app_id, record, 0, "unknown app", 0)
        request = Request.to(app, str(record.get("url", "")), str(record.get("body", "")).encode(),
                             str(record.get("webhook_id", "")), str(record.get("event", "up")))
        policy = Policy.of(app)
        outcome = await deliver(self.transport, request, policy,
                                time.monotonic() + policy.worst_case_s())
        if outcome.verdict is Verdict.DELIVERED:
            log.info("dead letter %s of %s replayed", record_id, app_id)
            return Resolved(found=True, delivered=True, status=outcome.status)
        return await self._put_back(app_id, record, outcome.status,
                                    outcome.detail or outcome.verdict.value, outcome.attempts)

    async def _put_back(self, app: str, record: Record, status: int, reason: str,
                        attempts: int) -> Resolved:
        record = {**record, "status": status, "reason": reason,
                  "attempts": int(record.get("attempts", 0)) + attempts,
                  "at_ms": int(time.time() * 1000)}
        try:
            await self.deadletters.put(app, record)
        except PushwireError as exc:
            log.error("dead letter of %s lost after a failed replay: %s %s: %r", app,
                      exc.message, exc.detail, record)
            raise
        return Resolved(found=True, status=status, detail=reason[:200])

    async def close(self) -> None:
        await self.transport.close()
