"""`pushwire broadcast | publish`: reach everyone of an app, or a topic's listeners.

    pushwire broadcast --app demo --data "hello all" --rate 5000   # live progress until done
    pushwire broadcast --app demo --status 1234                    # one job's state (JSON)
    pushwire broadcast --app demo --cancel 1234
    pushwire publish --app demo --topic news --data "breaking"     # online listeners only

`broadcast` creates a job (POST /v1/apps/{app}/broadcasts, docs/broadcast.md) and redraws a
progress bar on stderr until the job ends; the final job is printed as JSON on stdout. Ctrl-C
offers to cancel the job (answer n to keep watching); without a terminal it leaves the job
running and says how to cancel it. Keys and URLs come from flags, then PUSHWIRE_API_KEY /
PUSHWIRE_CENTER_URL, then the running `pushwire dev` cluster (cli/cluster.py).
Exit codes: 0 done, 1 refused, failed or cancelled, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp

from cli.clients import UsageError, api_key_for, dev_cluster, error_line, http_session

Ask = Callable[[str], str]


def add_parsers(subs: Any) -> None:
    _add_broadcast(subs)
    _add_publish(subs)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", required=True)
    p.add_argument("--center", help="center URL (default: PUSHWIRE_CENTER_URL, then dev cluster)")
    p.add_argument("--api-key", help="API key (default: PUSHWIRE_API_KEY, then dev cluster)")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in s")


def _add_broadcast(subs: Any) -> None:
    p = subs.add_parser(
        "broadcast", help="send a message to every user of an app, paced, with live progress",
        description="Create a broadcast job and show its progress until it ends (Ctrl-C offers "
                    "to cancel it). Users offline now get the message when they connect, "
                    "within its TTL.")
    _common(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", help="message text (sent as UTF-8)")
    what.add_argument("--data-b64", help="message bytes, base64")
    what.add_argument("--status", metavar="ID", help="show one job and exit")
    what.add_argument("--cancel", metavar="ID", help="cancel one job and exit")
    p.add_argument("--rate", type=float, help="deliveries per second, whole cluster "
                                              "(default: center's)")
    p.add_argument("--ttl", type=int, help="seconds offline users can still get it")
    p.add_argument("--no-wait", action="store_true", help="print the new job and exit")
    p.set_defaults(run=run_broadcast)


def _add_publish(subs: Any) -> None:
    p = subs.add_parser("publish", help="publish a message to a topic (online listeners only)",
                        description="POST {center}/v1/apps/{app}/topics/{topic}/publish and "
                                    "print the JSON reply (rooms that took it, deliveries).")
    _common(p)
    p.add_argument("--topic", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", help="message text (sent as UTF-8)")
    what.add_argument("--data-b64", help="message bytes, base64")
    p.set_defaults(run=run_publish)


# --- pure parts ---------------------------------------------------------------------------------

def data_field(args: argparse.Namespace) -> dict[str, str]:
    """{"data": text} or {"data_b64": checked base64}."""
    if args.data is not None:
        return {"data": args.data}
    try:
        base64.b64decode(args.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError("--data-b64 is not valid base64") from exc
    return {"data_b64": args.data_b64}


def broadcast_body(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of POST /v1/apps/{app}/broadcasts."""
    body: dict[str, Any] = data_field(args)
    if args.rate is not None:
        if args.rate <= 0:
            raise UsageError("--rate must be > 0")
        body["rate_per_s"] = args.rate
    if args.ttl is not None:
        if args.ttl < 1:
            raise UsageError("--ttl must be >= 1")
        body["ttl_s"] = args.ttl
    return body


def progress_line(job: dict[str, Any], width: int = 30) -> str:
    """One line of progress: bar, deliveries of connections, rooms, rate, time, state."""
    total = sum(int(s.get("connections", 0)) for s in job.get("shares", []))
    delivered = int(job.get("delivered", 0))
    running = job.get("state") == "running"
    fraction = min(delivered / total, 1.0) if total else (0.0 if running else 1.0)
    filled = round(fraction * width)
    bar = "#" * filled + "-" * (width - filled)
    of = f"/{total}" if total or not running else "/?"     # "?": no room started yet
    return (f"[{bar}] {fraction:4.0%} {delivered}{of} delivered, rooms "
            f"{job.get('rooms_done', 0)}/{job.get('rooms', 0)}, "
            f"{float(job.get('measured_per_s', 0)):.0f}/s of {float(job.get('rate_per_s', 0)):g}"
            f"/s, {float(job.get('elapsed_s', 0)):.1f}s, {job.get('state', '?')}")


# --- talking to center --------------------------------------------------------------------------

class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(error_line(status, text))


@dataclass
class Center:
    """center's HTTP API for one app."""

    url: str
    app: str
    key: str
    timeout_s: float = 10.0
    session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def __aenter__(self) -> Center:
        self.session = http_session(self.url, self.timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) \
            -> dict[str, Any]:
        assert self.session is not None
        url = f"{self.url.rstrip('/')}/v1/apps/{self.app}{path}"
        async with self.session.request(method, url, json=body, headers={
                "Authorization": f"Bearer {self.key}"}) as response:
            text = await response.text()
            if response.status >= 400:
                raise HttpError(response.status, text)
            reply: dict[str, Any] = json.loads(text)
            return reply


# --- watching a job ----------------------------------------------------------------------------

@dataclass
class Watch:
    """Shows a job's progress until it ends; Ctrl-C offers to cancel it."""

    center: Center
    out: TextIO
    err: TextIO
    ask: Ask | None              # None: no terminal to ask on
    every_s: float = 0.25
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    last_line: float = 0.0

    async def run(self, job_id: str) -> int:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.interrupted.set)
        try:
            return await self._watch(job_id)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)

    async def _watch(self, job_id: str) -> int:
        while True:
            job = await self.center.call("GET", f"/broadcasts/{job_id}")
            self._show(job, final=job["state"] != "running")
            if job["state"] != "running":
                return self._finish(job)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every_s):
                    await self.interrupted.wait()
            if self.interrupted.is_set():
                self.interrupted.clear()
                code = await self._offer_cancel(job_id)
                if code is not None:
                    return code

    async def _offer_cancel(self, job_id: str) -> int | None:
        """Ctrl-C: ask whether to cancel; the exit code when watching ends, else None.
        A second Ctrl-C at the question leaves the job running."""
        self.err.write("\n")
        if self.ask is not None:
            answer = await self._answer(f"Cancel broadcast {job_id}? [y/N] ")
            if answer is not None and answer.strip().lower() not in ("y", "yes"):
                return None
            if answer is not None:
                job = await self.center.call("DELETE", f"/broadcasts/{job_id}")
                self._show(job, final=True)
                return self._finish(job)
            self.err.write("\n")
        self.err.write(f"pushwire broadcast: job {job_id} keeps running; cancel it with "
                       f"`pushwire broadcast --app {self.center.app} --cancel {job_id}`\n")
        return 130

    async def _answer(self, question: str) -> str | None:
        """The user's answer, or None on another Ctrl-C. The question waits on a daemon
        thread (input() blocks), so leaving never waits for a line that will not come."""
        assert self.ask is not None
        ask, loop = self.ask, asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def read() -> None:
            try:
                text = ask(question)
            except EOFError:
                text = ""
            with contextlib.suppress(RuntimeError):          # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, answer, text)

        self.interrupted.clear()
        threading.Thread(target=read, name="pushwire-ask", daemon=True).start()
        again = loop.create_task(self.interrupted.wait())
        waiting: set[asyncio.Future[Any]] = {answer, again}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            again.cancel()
        self.interrupted.clear()
        return answer.result() if answer.done() else None

    def _show(self, job: dict[str, Any], *, final: bool) -> None:
        """Redraw the bar on a terminal; elsewhere, a line a second (and the last one)."""
        line = progress_line(job)
        if self.err.isatty():
            self.err.write("\r\033[K" + line + ("\n" if final else ""))
        elif final or time.monotonic() - self.last_line >= 1:
            self.err.write(line + "\n")
            self.last_line = time.monotonic()
        self.err.flush()

    def _finish(self, job: dict[str, Any]) -> int:
        self.out.write(json.dumps(job) + "\n")
        self.out.flush()
        return 0 if job["state"] == "done" else 1


# --- commands ----------------------------------------------------------------------------------

def _center(args: argparse.Namespace) -> Center:
    key = api_key_for(args.app, args.api_key)
    return Center(args.center or dev_cluster().center, args.app, key, args.timeout)


def run_broadcast(args: argparse.Namespace) -> int:
    try:
        body = None if args.status or args.cancel else broadcast_body(args)
        center = _center(args)
    except UsageError as exc:
        return _fail("broadcast", str(exc), 2)
    ask = input if sys.stdin.isatty() and sys.stderr.isatty() else None
    try:
        return asyncio.run(broadcast(center, args, body, sys.stdout, sys.stderr, ask))
    except KeyboardInterrupt:
        return 130


async def broadcast(center: Center, args: argparse.Namespace, body: dict[str, Any] | None,
                    out: TextIO, err: TextIO, ask: Ask | None) -> int:
    """Create (or show, or cancel) a job, then watch it; the exit code."""
    try:
        async with center:
            if args.status or args.cancel:
                method = "GET" if args.status else "DELETE"
                job = await center.call(method, f"/broadcasts/{args.status or args.cancel}")
                out.write(json.dumps(job) + "\n")
                return 0
            assert body is not None
            job = await center.call("POST", "/broadcasts", body)
            err.write(f"broadcast {job['id']} of {args.app}: {job['rooms']} rooms at "
                      f"{job['rate_per_s']:g}/s\n")
            if args.no_wait:
                out.write(json.dumps(job) + "\n")
                return 0
            return await Watch(center, out, err, ask).run(str(job["id"]))
    except HttpError as exc:
        return _fail("broadcast", str(exc), 1, err)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail("broadcast", f"cannot reach center at {center.url}: "
                                  f"{exc or type(exc).__name__}", 1, err)


def run_publish(args: argparse.Namespace) -> int:
    try:
        body = data_field(args)
        center = _center(args)
    except UsageError as exc:
        return _fail("publish", str(exc), 2)
    try:
        return asyncio.run(publish(center, args.topic, body, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130


async def publish(center: Center, topic: str, body: dict[str, Any], out: TextIO,
                  err: TextIO) -> int:
    try:
        async with center:
            reply = await center.call("POST", f"/topics/{topic}/publish", body)
    except HttpError as exc:
        return _fail("publish", str(exc), 1, err)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail("publish", f"cannot reach center at {center.url}: "
                                f"{exc or type(exc).__name__}", 1, err)
    out.write(json.dumps(reply) + "\n")
    return 0


def _settle(future: asyncio.Future[str], text: str) -> None:
    if not future.done():
        future.set_result(text)


def _fail(command: str, message: str, code: int, err: TextIO | None = None) -> int:
    print(f"pushwire {command}: {message}", file=err or sys.stderr)
    return code
