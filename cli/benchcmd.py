"""`pushwire bench SCENARIO [--peers] [--quick]`: measure pushwire, and its peers in the same run.

Prints one JSON line per server (and phase) on stdout, then a readable table and, with
--peers, pushwire's figures divided by each peer's. Progress goes to stderr. Scenarios and
figures: bench/scenarios.py; recorded results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import report, scale, scenarios, stages
from bench.loadgen import raise_fd_limit
from services.kit import lifecycle


def add_parser(subs: Any) -> None:
    p = subs.add_parser("bench", help="benchmark pushwire (and nats-server, mosquitto)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=(*scenarios.SCENARIOS, "all"),
                   help="fanout: a burst of --messages; paced: one message every --interval-ms "
                        "for --seconds, timed to the last subscriber (docs/bench.md)")
    p.add_argument("--peers", action="store_true",
                   help="also run nats-server and mosquitto (Debian packages) in the same run")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, one run: under 2 minutes per scenario")
    p.add_argument("-n", type=int, help="connections (default 10000, quick 1000)")
    p.add_argument("--runs", type=int, help="runs per figure, the median is reported (3)")
    p.add_argument("--messages", type=int, help="fanout: messages per run (50, quick 20)")
    p.add_argument("--size", type=int, help="message bytes (256)")
    p.add_argument("--rate", type=int, help="unicast: the fixed rate per second (2000)")
    p.add_argument("--seconds", type=float,
                   help="unicast: seconds per phase; paced: seconds of publishing; scale: the "
                        "rest-CPU window (10, quick 3)")
    p.add_argument("--interval-ms", type=float,
                   help="paced: milliseconds between two messages, on a schedule (10)")
    p.add_argument("--uids-per-call", type=int,
                   help="unicast at full speed: uids per push request (100, quick 50)")
    p.add_argument("--processes", type=int,
                   help="load-generator processes (2; scale: raised to what -n needs)")
    p.add_argument("--workers", type=int,
                   help="scale: room worker processes on one port (2)")
    p.add_argument("--heartbeat", type=int, help="scale: the clients' heartbeat in s (240)")
    p.add_argument("--samples", type=int, help="scale: sampled single pushes (200)")
    p.add_argument("--real", action="store_true",
                   help="pushwire on ZooKeeper, Redis and MySQL (as `pushwire dev --real`)")
    p.add_argument("--via", choices=("auto", "topic", "deliver"),
                   help="pushwire fanout path: topic publish or room Deliver (auto)")
    p.add_argument("--workdir", type=Path, help="logs and configs (a temporary directory)")
    p.add_argument("--set", action="append", default=[], metavar="PUSHWIRE_X=VALUE",
                   help="a setting for every pushwire service (docs/config.md); repeatable")
    p.add_argument("--profile", type=Path,
                   help="record py-spy stacks of the room during each measured phase here")
    p.set_defaults(run=run)


def options(args: argparse.Namespace, workdir: Path) -> scenarios.Options:
    given = {"n": args.n, "runs": args.runs, "messages": args.messages, "size": args.size,
             "rate": args.rate, "seconds": args.seconds, "uids_per_call": args.uids_per_call,
             "interval_ms": args.interval_ms,
             "processes": args.processes, "fanout_via": args.via, "profile": args.profile,
             "workers": args.workers, "heartbeat_s": args.heartbeat, "samples": args.samples}
    chosen: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    chosen.update(peers=args.peers, real=args.real, workdir=workdir,
                  env=tuple(tuple(item.split("=", 1)) for item in args.set))
    if args.quick:
        return scenarios.Options.quick(**chosen)
    return scenarios.Options(**chosen)


def check(opts: scenarios.Options, names: tuple[str, ...] = ()) -> str | None:
    """A usage error of running `names` with `opts`, or None."""
    if opts.n < 1 or opts.runs < 1 or opts.processes < 1 or opts.messages < 1:
        return "-n, --runs, --processes and --messages must be >= 1"
    if opts.size < 32:
        return "--size must be >= 32 (a payload carries its send time)"
    if opts.rate < 1 or opts.seconds <= 0 or opts.uids_per_call < 1 or opts.interval_ms <= 0:
        return "--rate, --seconds, --uids-per-call and --interval-ms must be positive"
    if any(len(item) != 2 or not item[0].startswith("PUSHWIRE_") for item in opts.env):
        return "--set takes PUSHWIRE_NAME=VALUE"
    if "scale" in names:
        return scale.check(opts)
    return None


def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="pushwire-bench-") as tmp:
        opts = options(args, args.workdir or Path(tmp))
        names = scenarios.SCENARIOS if args.scenario == "all" else (args.scenario,)
        problem = check(opts, names)
        if problem:
            print(f"pushwire bench: {problem}", file=sys.stderr)
            return 2
        for name in names:
            results = _run(name, opts)
            print_results(results)
    return 0


def _run(name: str, opts: scenarios.Options) -> list[report.Result]:
    return lifecycle.run_loop(scenarios.run(name, opts))


def print_results(results: list[report.Result]) -> None:
    for result in results:
        print(result.json_line())
    print()
    print(report.table(results))
    for line in report.ratios(results):
        print(line)
    for result in results:
        rows = result.figures.get("breakdown")
        if rows:
            print(f"\nwhere {report.label(result)}'s time went (bench/stages.py):")
            print(stages.table(rows))
    print(flush=True)

