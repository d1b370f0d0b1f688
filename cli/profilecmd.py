"""`pushwire profile INSTANCE --seconds N -o FILE`: a sampling profile of one service instance
through center's admin API (docs/operations.md §9, docs/api.md §4).

    pushwire profile room-0 --seconds 10 -o room.txt           # collapsed stacks
    flamegraph.pl room.txt > room.svg
    pushwire profile saver-1a2b --seconds 5 -o saver.json      # speedscope (speedscope.app)

INSTANCE is the id discovery shows (`pushwire rooms` lists the rooms). The format is
--format, else speedscope for a FILE ending in .json, else collapsed. Where center is and its
admin key: as for `pushwire app` (--center, PUSHWIRE_CENTER_URL, the dev cluster;
--admin-key, PUSHWIRE_ADMIN_KEY, the dev cluster's). Exit codes: 0 written, 1 refused or
failed (409: a profile of that instance is already running), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import aiohttp

from cli import clients
from cli.appcmds import Admin, run_admin
from services.kit.profiler import HZ_DEFAULT, MAX_S, MIN_S

SLACK_S = 30.0          # HTTP timeout beyond the profile's own duration


def add_parser(subs: Any) -> None:
    p = subs.add_parser("profile", help="sample one service instance and save the profile",
                        description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("instance", help="the instance id in discovery (e.g. room-0)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help=f"how long to sample, {MIN_S:g}-{MAX_S:g} (default: %(default)s)")
    p.add_argument("--hz", type=int, default=HZ_DEFAULT,
                   help="samples per second, 1-1000 (default: %(default)s)")
    p.add_argument("--format", choices=("collapsed", "speedscope"),
                   help="collapsed stacks (flamegraph.pl) or speedscope JSON (default: by "
                        "the file's extension)")
    p.add_argument("-o", "--output", required=True, type=Path, help="file to write")
    p.add_argument("--center", help="center URL (default: PUSHWIRE_CENTER_URL, then the dev "
                                    "cluster)")
    p.add_argument("--admin-key", help="center's admin key (default: PUSHWIRE_ADMIN_KEY, then "
                                       "the dev cluster's)")
    p.set_defaults(run=run)


def format_of(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    return "speedscope" if args.output.suffix == ".json" else "collapsed"


async def fetch(admin: Admin, args: argparse.Namespace) -> tuple[int, bytes, str]:
    """(status, body, what the headers say about the run)."""
    body = {"seconds": args.seconds, "hz": args.hz, "format": format_of(args)}
    timeout = aiohttp.ClientTimeout(total=args.seconds + SLACK_S)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
            f"{admin.center}/v1/admin/instances/{args.instance}/profile", json=body,
            headers={"Authorization": f"Bearer {admin.key}"}) as response:
        data = await response.read()
        h = response.headers
        summary = (f"{h.get('X-Profile-Ticks', '?')} ticks in {h.get('X-Profile-Seconds', '?')} s,"
                   f" sampler CPU {h.get('X-Profile-Sampler-Cpu-S', '?')} s")
        return response.status, data, summary


def run(args: argparse.Namespace) -> int:
    if not MIN_S <= args.seconds <= MAX_S:
        return _fail(f"--seconds must be {MIN_S:g} to {MAX_S:g}", 2)
    args.timeout = args.seconds + SLACK_S
    outcome = run_admin(lambda: fetch(Admin(args), args), _fail)
    if isinstance(outcome, int):
        return outcome
    status, data, summary = outcome
    if status != 200:
        return _fail(clients.error_line(status, data.decode(errors="replace")),
                     2 if status == 400 else 1)
    try:
        args.output.write_bytes(data)
    except OSError as exc:
        return _fail(f"cannot write {args.output}: {exc}", 1)
    print(f"{args.instance}: {format_of(args)} profile written to {args.output} ({summary})")
    return 0


def _fail(message: str, code: int) -> int:
    print(f"pushwire profile: {message}", file=sys.stderr)
    return code
