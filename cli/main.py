"""`pushwire`: run the cluster or one service, and talk to a running cluster.

Each sub-command lives in the module named for what it does; this file only builds the
parser from them and dispatches.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from cli import appcmds, broadcast, clients, dev, ops, roomcmds, servicecmds
from services.kit.host import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushwire",
        description="pushwire: a long-connection push gateway cluster.",
        epilog="Run `pushwire dev` for a whole cluster on this machine, then `pushwire listen` "
               "and `pushwire push` in other shells.")
    parser.add_argument("--version", action="version", version=f"pushwire {version()}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev.add_parser(subs)
    servicecmds.add_parsers(subs)
    clients.add_parsers(subs)
    broadcast.add_parsers(subs)
    ops.add_parsers(subs)
    appcmds.add_parsers(subs)
    roomcmds.add_parsers(subs)
    if importlib.util.find_spec("bench") is not None:   # not installed in the container image
        from cli import benchcmd

        benchcmd.add_parser(subs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
