"""Where the CLI finds a cluster: flags, then env, then the running `pushwire dev` cluster.

`pushwire dev` writes cluster.json in its home, `dev_home()` (PUSHWIRE_DEV_HOME, else
<PUSHWIRE_HOME>/dev; `pushwire dev --home X` prints the export that points other shells at X):
    {"dispatcher": "http://127.0.0.1:8000", "center": "http://127.0.0.1:8100",
     "discovery": "file:...", "admin_key": "...",
     "apps": {"demo": {"secret": "...", "api_key": "..."}}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.kit.config import DEV_HOME

DEFAULT_DEV_HOME = DEV_HOME / "dev"


def dev_home() -> Path:
    """Where `pushwire dev` keeps its state and the CLI finds it: PUSHWIRE_DEV_HOME, else
    <PUSHWIRE_HOME>/dev."""
    return Path(os.environ.get("PUSHWIRE_DEV_HOME") or DEFAULT_DEV_HOME).expanduser()


@dataclass(frozen=True)
class Cluster:
    dispatcher: str = "http://127.0.0.1:8000"
    center: str = "http://127.0.0.1:8100"
    discovery: str = ""
    admin_key: str = ""                  # center's admin API (docs/api.md §4)
    apps: dict[str, dict[str, str]] = field(default_factory=dict)

    def secret(self, app: str) -> str:
        return self.apps.get(app, {}).get("secret", "")

    def api_key(self, app: str) -> str:
        return self.apps.get(app, {}).get("api_key", "")


def load(path: Path | None = None) -> Cluster:
    """The cluster the CLI talks to: the dev descriptor (`dev_home()`/cluster.json unless
    `path`) overridden by environment variables."""
    path = path or dev_home() / "cluster.json"
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    env = os.environ
    return Cluster(
        dispatcher=env.get("PUSHWIRE_DISPATCHER_URL", data.get("dispatcher", Cluster.dispatcher)),
        center=env.get("PUSHWIRE_CENTER_URL", data.get("center", Cluster.center)),
        discovery=env.get("PUSHWIRE_DISCOVERY", data.get("discovery", "")),
        admin_key=data.get("admin_key", ""),
        apps=data.get("apps", {}),
    )


def save(cluster: Cluster, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"dispatcher": cluster.dispatcher, "center": cluster.center,
                               "discovery": cluster.discovery,
                               "admin_key": cluster.admin_key, "apps": cluster.apps}, indent=2))
    tmp.replace(path)
