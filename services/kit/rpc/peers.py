"""Finding a service's instances in discovery and routing keys to them.

Routing is on every hot path (each stored message, each ACK id, each lookup), so a Peers
keeps the live instances of its kind and the owners of recently routed keys, and drops both
when discovery reports a change of that kind.
"""

from __future__ import annotations

import asyncio

from pushwire_protocol.errors import Unavailable
from services.kit import shards
from services.kit.discovery import Discovery, Instance
from services.kit.lifecycle import wait_set

OWNER_CACHE = 100_000   # keys whose owner is remembered until the next change


class Peers:
    """The live instances of one kind, by id, with rendezvous routing of keys."""

    def __init__(self, discovery: Discovery, kind: str, role: str = "grpc") -> None:
        self._discovery = discovery
        self.kind = kind
        self.role = role
        self._live: list[Instance] | None = None
        self._by_id: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._seen = asyncio.Event()        # set when discovery's view of `kind` changes
        discovery.listen(self._changed)

    def _changed(self, kind: str) -> None:
        if kind == self.kind:
            self._live = None
            self._owners.clear()
            self._seen.set()

    def all(self) -> list[Instance]:
        """Live instances that publish a `role` address (cached until the next change)."""
        if self._live is None:
            self._live = [i for i in self._discovery.instances(self.kind)
                          if self.role in i.addresses]
            self._by_id = {i.id: i.addresses[self.role] for i in self._live}
        return self._live

    def address(self, instance_id: str) -> str | None:
        """The `role` address of one instance, or None when it is not live."""
        self.all()
        return self._by_id.get(instance_id)

    def owner(self, key: str) -> str:
        """The address of the instance owning `key`; Unavailable when there is none."""
        found = self._owners.get(key)
        if found is not None:
            return found
        self.all()
        chosen = shards.owner(key, list(self._by_id))
        if chosen is None:
            raise Unavailable(f"no {self.kind} instance")
        if len(self._owners) >= OWNER_CACHE:
            self._owners.clear()
        address = self._owners[key] = self._by_id[chosen]
        return address

    async def owner_soon(self, key: str, wait_s: float) -> str:
        """`owner(key)`, waiting up to `wait_s` for discovery to show an instance when it shows
        none: a restarted instance announces itself a moment after its old self left, and
        this process's view learns of it later still (a watch, a folder poll). Unavailable
        when none appears in time."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                return self.owner(key)
            except Unavailable:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise
                self._seen.clear()      # no await since owner() looked: no change is missed
                await wait_set(self._seen, left)

    def addresses(self) -> set[str]:
        self.all()
        return set(self._by_id.values())


def user_key(app: str, uid: str) -> str:
    """The sharding key of one user's state (register sessions, saver inbox)."""
    return f"{app}\x00{uid}"
