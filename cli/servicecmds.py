"""`pushwire <service>`: run one service in the foreground (config from env / TOML)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SERVICES = ("dispatcher", "room", "register", "coordinator", "saver", "center")

HELP = {
    "dispatcher": "HTTP route service: which rooms a client should connect to",
    "room": "WebSocket gateway holding client connections",
    "register": "session index: who is connected where",
    "coordinator": "upstream data to webhooks, status callbacks, kick",
    "saver": "message storage: inboxes in Redis, durable copy in MySQL",
    "center": "public HTTP API for business backends",
}


def add_parsers(subs: Any) -> None:
    for name in SERVICES:
        p = subs.add_parser(name, help=HELP[name], description=(
            f"Run one {name} instance. Settings come from PUSHWIRE_* / PUSHWIRE_{name.upper()}_* "
            "environment variables and the TOML file named by PUSHWIRE_CONFIG (docs/config.md)."))
        p.set_defaults(run=_runner(name))


def _runner(name: str) -> Any:
    def run(_args: argparse.Namespace) -> int:
        module = importlib.import_module(f"services.{name}.main")
        code: int = module.main()
        return code
    return run
