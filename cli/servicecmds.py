"""`pushwire <service>`: run one service in the foreground (config from env / TOML)."""

from __future__ import annotations

import argparse
import importlib
import sys
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


CONFIGS = {
    "dispatcher": ("services.dispatcher.config", "DispatcherConfig"),
    "room": ("services.room.config", "RoomConfig"),
    "register": ("services.register.config", "RegisterConfig"),
    "coordinator": ("services.coordinator.config", "CoordinatorConfig"),
    "saver": ("services.saver.config", "SaverConfig"),
    "center": ("services.center.config", "CenterConfig"),
}


def add_parsers(subs: Any) -> None:
    p = subs.add_parser("config", help="show a service's settings, their values and env names",
                        description="Print every setting of SERVICE with the value it would "
                                    "run with here (defaults, PUSHWIRE_CONFIG TOML, env).")
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(run=show_config)
    for name in SERVICES:
        p = subs.add_parser(name, help=HELP[name], description=(
            f"Run one {name} instance. Settings come from PUSHWIRE_* / PUSHWIRE_{name.upper()}_* "
            "environment variables and the TOML file named by PUSHWIRE_CONFIG (docs/config.md)."))
        if name == "room":
            p.add_argument("--workers", type=int, default=1, metavar="N",
                           help="run N room processes sharing the WebSocket port "
                                "(SO_REUSEPORT), each its own room instance")
        p.set_defaults(run=_runner(name))


def _runner(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        workers: int = getattr(args, "workers", 1)
        if workers < 1:
            print("pushwire room: --workers must be >= 1", file=sys.stderr)
            return 2
        if workers > 1:
            from services.room import workers as room_workers

            return room_workers.main(workers)
        module = importlib.import_module(f"services.{name}.main")
        code: int = module.main()
        return code
    return run


def show_config(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from pushwire_protocol.errors import ConfigError
    from services.kit import config

    module, cls_name = CONFIGS[args.service]
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        cfg = config.load(cls, args.service)
    except ConfigError as exc:
        print(f"pushwire config: {exc.message}", file=sys.stderr)
        return 2
    for f in fields(cfg):
        env = f"PUSHWIRE_{args.service.upper()}_{f.name.upper()}"
        value = getattr(cfg, f.name)
        shown = value if f.repr or not value else "(set, not shown)"      # secrets
        print(f"{f.name:22} {shown!s:45} {env}")
    return 0
