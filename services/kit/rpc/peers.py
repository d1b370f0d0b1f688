"""Finding a service's instances in discovery and routing keys to them."""

from __future__ import annotations

from services.kit import shards
from services.kit.discovery import Discovery, Instance
from services.kit.errors import Unavailable


class Peers:
    """The live instances of one kind, by id, with rendezvous routing of keys."""

    def __init__(self, discovery: Discovery, kind: str, role: str = "grpc") -> None:
        self._discovery = discovery
        self.kind = kind
        self.role = role

    def all(self) -> list[Instance]:
        return [i for i in self._discovery.instances(self.kind) if self.role in i.addresses]

    def address(self, instance_id: str) -> str | None:
        """The `role` address of one instance, or None when it is not live."""
        for inst in self.all():
            if inst.id == instance_id:
                return inst.addresses[self.role]
        return None

    def owner(self, key: str) -> str:
        """The address of the instance owning `key`; Unavailable when there is none."""
        live = {i.id: i.addresses[self.role] for i in self.all()}
        chosen = shards.owner(key, list(live))
        if chosen is None:
            raise Unavailable(f"no {self.kind} instance")
        return live[chosen]

    def addresses(self) -> set[str]:
        return {i.addresses[self.role] for i in self.all()}


def user_key(app: str, uid: str) -> str:
    """The sharding key of one user's state (register sessions, saver inbox)."""
    return f"{app}\x00{uid}"
