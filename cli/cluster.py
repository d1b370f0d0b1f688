"""Where the CLI finds a cluster: flags, then env, then the running `pushwire dev` cluster.

`pushwire dev` writes <PUSHWIRE_HOME>/dev/cluster.json:
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

CLUSTER_FILE = DEV_HOME / "dev" / "cluster.json"


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


def load(path: Path = CLUSTER_FILE) -> Cluster:
    """The cluster the CLI talks to: the dev descriptor overridden by environment variables."""
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


def save(cluster: Cluster, path: Path = CLUSTER_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"dispatcher": cluster.dispatcher, "center": cluster.center,
                               "discovery": cluster.discovery,
                               "admin_key": cluster.admin_key, "apps": cluster.apps}, indent=2))
    tmp.replace(path)
