"""Discovery and live app configuration behind one interface (DESIGN.md §6).

Two backends:
- `zk://host:port[,host:port]/chroot` — ZooKeeper through kazoo (services/kit/discovery/zk.py,
  the only module that imports kazoo);
- `file:PATH` — a directory shared by the processes of one machine (`pushwire dev`,
  services/kit/discovery/local.py); an instance is alive while its process is.

Layout (both backends):   <root>/instances/<kind>/<instance id>   JSON of Instance, ephemeral
                          <root>/apps/<app id>                     JSON of AppConfig
Every service keeps a cached, watch-driven view: `instances(kind)` and `app(id)` never block.
`app` and `apps` return an app as it stands now (`AppConfig.at`): a secret or API key whose
rotation overlap has ended is gone from every service's view at that moment, whether or not
anyone has rewritten the stored configuration since (docs/security.md §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from services.kit.discovery.models import AppConfig, Instance

__all__ = ["AppConfig", "Discovery", "Instance", "Listener", "connect"]

Listener = Callable[[str], None]
"""Called on the event loop with the kind that changed ("apps" for app configuration)."""


class Discovery(Protocol):
    """What every service needs from ZooKeeper (or its local stand-in)."""

    async def start(self, kinds: tuple[str, ...]) -> None:
        """Connect and begin watching the instances of `kinds` and all apps."""

    async def close(self) -> None:
        """Withdraw this process's instance (if any) and disconnect."""

    async def announce(self, instance: Instance) -> int:
        """Publish `instance` as ephemeral; returns a sequence number unique among announces."""

    async def update(self, instance: Instance) -> None:
        """Replace the published data of the announced instance (load, draining)."""

    def instances(self, kind: str) -> list[Instance]:
        """Live instances of a watched kind, sorted by id."""

    def app(self, app_id: str) -> AppConfig | None:
        """Cached configuration of one app, without its retired credentials."""

    def apps(self) -> dict[str, AppConfig]:
        """Cached configuration of every app."""

    async def put_app(self, app: AppConfig) -> None:
        """Create or replace an app's configuration; every watcher sees it shortly."""

    async def delete_app(self, app_id: str) -> None:
        """Remove an app's configuration."""

    def listen(self, listener: Listener) -> None:
        """Call `listener(kind)` on the loop after the view of `kind` (or "apps") changed."""


def connect(url: str) -> Discovery:
    """Build the backend named by `url` (not yet started)."""
    if url.startswith("zk://"):
        from services.kit.discovery.zk import ZkDiscovery

        return ZkDiscovery(url)
    if url.startswith("file:"):
        from services.kit.discovery.local import LocalDiscovery

        return LocalDiscovery(url.removeprefix("file:"))
    from pushwire_protocol.errors import ConfigError

    raise ConfigError(f"discovery URL must start with zk:// or file:, got {url!r}")
