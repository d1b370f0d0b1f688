"""`pushwire token | listen | push`: act as a client or as a business backend of a cluster.

    pushwire token  --app demo --uid alice                 # a client JWT (docs/protocol.md §4.1)
    pushwire listen --app demo --uid alice --count 1       # one JSON line per message received
    pushwire push   --app demo --uid alice --data hello    # POST /v1/apps/demo/push

Where things come from, strongest first: flags, environment (PUSHWIRE_SECRET,
PUSHWIRE_API_KEY, PUSHWIRE_DISPATCHER_URL, PUSHWIRE_CENTER_URL, PUSHWIRE_CAFILE), then the
running `pushwire dev` cluster (cli/cluster.py). On https:// and wss:// the servers'
certificates are checked against --cafile (PUSHWIRE_CAFILE), else the system's CAs and the dev
CA of `pushwire dev --tls` (pushwire_sdk.trust). Exit codes: 0 done, 1 the cluster refused or
failed, 2 bad usage (e.g. no secret or API key found), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import aiohttp

from cli import cluster as clusterfile
from pushwire_protocol.errors import ConfigError, PushwireError
from pushwire_sdk import trust
from pushwire_sdk.client import ClientClosed, Message, PushClient
from services.kit import token

Env = Mapping[str, str]
Loader = Callable[[], clusterfile.Cluster]


def add_parsers(subs: Any) -> None:
    _add_token(subs)
    _add_listen(subs)
    _add_push(subs)


def _add_token(subs: Any) -> None:
    p = subs.add_parser("token", help="mint a client token for (app, uid[, device])",
                        description="Print a client token: a JWT (HS256) signed with the "
                        "app's secret, its kid naming that secret (docs/protocol.md §4.1).")
    _identity(p, device_default="")
    p.add_argument("--ttl", type=int, default=86400, help="seconds of validity (%(default)s)")
    p.add_argument("--secret", help="app secret (default: PUSHWIRE_SECRET, then the dev cluster)")
    p.set_defaults(run=run_token)


def _add_listen(subs: Any) -> None:
    p = subs.add_parser(
        "listen", help="connect as a client and print each message as a JSON line",
        description="Connect through the dispatcher as (app, uid, device), print each push as "
                    "one JSON line on stdout and acknowledge it; reconnect with backoff. Ends "
                    "after --count messages or --timeout seconds (exit 0), or when the room "
                    "closes with a do-not-reconnect code (exit 1).")
    _identity(p, device_default="cli")
    p.add_argument("--dispatcher", help="dispatcher URL (default: PUSHWIRE_DISPATCHER_URL, "
                                        "then the dev cluster)")
    p.add_argument("--token", help="client token (default: minted with the app's secret)")
    p.add_argument("--secret", help="app secret to mint the token with")
    p.add_argument("--ttl", type=int, default=86400, help="validity of a minted token (s)")
    p.add_argument("--net", default="wifi", help="network type reported to the dispatcher")
    p.add_argument("--heartbeat", type=int, default=0,
                   help="proposed heartbeat interval in s (0: the app's default)")
    p.add_argument("--count", type=_positive, default=0, help="exit after N messages")
    p.add_argument("--timeout", type=float, default=None, help="exit after S seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="log connects and reconnects")
    add_cafile(p)
    p.set_defaults(run=run_listen)


def _add_push(subs: Any) -> None:
    p = subs.add_parser("push", help="push a message to users through center",
                        description="POST {center}/v1/apps/{app}/push and print the JSON reply.")
    p.add_argument("--app", required=True)
    p.add_argument("--uid", required=True, action="append", dest="uids", metavar="UID",
                   help="target user; repeat for several")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="message text (sent as UTF-8)")
    data.add_argument("--data-b64", help="message bytes, base64")
    p.add_argument("--device", help="deliver to this device only")
    p.add_argument("--ttl", type=int, help="seconds the message is kept (default: the app's)")
    p.add_argument("--durable", action="store_true", help="also write the durable copy first")
    p.add_argument("--center", help="center URL (default: PUSHWIRE_CENTER_URL, then dev cluster)")
    p.add_argument("--api-key", help="API key (default: PUSHWIRE_API_KEY, then dev cluster)")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in s")
    add_cafile(p)
    p.set_defaults(run=run_push)


def _identity(p: argparse.ArgumentParser, device_default: str) -> None:
    p.add_argument("--app", required=True)
    p.add_argument("--uid", required=True)
    p.add_argument("--device", default=device_default,
                   help="device id (default: %(default)r" + (", any device)" if not
                                                             device_default else ")"))


def add_cafile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cafile", help="PEM file of the CAs to trust on https/wss (default: "
                                    "PUSHWIRE_CAFILE, else the system's and the dev CA)")


def cafile_for(flag: str | None, env: Env = os.environ) -> str | None:
    """The CA file to trust: --cafile, else PUSHWIRE_CAFILE, else None (pushwire_sdk.trust's
    default: the system's CAs and the dev CA)."""
    return flag or env.get("PUSHWIRE_CAFILE") or None


def http_session(url: str, timeout_s: float, cafile: str | None = None) -> aiohttp.ClientSession:
    """An HTTP client for `url`'s server, trusting `cafile_for(cafile)` on https.
    ConfigError when the CA file does not load."""
    tls = trust.client_context(cafile_for(cafile), clusterfile.dev_home() / "tls" / "ca.pem") \
        if url.startswith("https:") else None
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 connector=aiohttp.TCPConnector(ssl=tls) if tls else None)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


class UsageError(Exception):
    """Something the user must supply is missing (exit 2)."""


# -- where secrets, keys and URLs come from -----------------------------------------------------

def dev_cluster() -> clusterfile.Cluster:
    """The cluster file as it is now (looked up when needed, not at import)."""
    return clusterfile.load()


def secret_for(app: str, flag: str | None, env: Env = os.environ,
               load: Loader = dev_cluster) -> str:
    """The app secret: --secret, else PUSHWIRE_SECRET, else the dev cluster's."""
    found = flag or env.get("PUSHWIRE_SECRET") or load().secret(app)
    if not found:
        raise UsageError(f"no secret for app {app!r}: pass --secret, set PUSHWIRE_SECRET or "
                         "run `pushwire dev`")
    return found


def api_key_for(app: str, flag: str | None, env: Env = os.environ,
                load: Loader = dev_cluster) -> str:
    """The API key: --api-key, else PUSHWIRE_API_KEY, else the dev cluster's."""
    found = flag or env.get("PUSHWIRE_API_KEY") or load().api_key(app)
    if not found:
        raise UsageError(f"no API key for app {app!r}: pass --api-key, set PUSHWIRE_API_KEY "
                         "or run `pushwire dev`")
    return found


def mint(args: argparse.Namespace, now: float, env: Env = os.environ,
         load: Loader = dev_cluster) -> str:
    return token.mint(secret_for(args.app, args.secret, env, load), args.app, args.uid,
                      now=now, ttl_s=args.ttl, device=args.device)


# -- token -----------------------------------------------------------------------------------

def run_token(args: argparse.Namespace) -> int:
    try:
        print(mint(args, time.time()))
    except UsageError as exc:
        return _fail("token", str(exc), 2)
    return 0


# -- listen ----------------------------------------------------------------------------------

def message_line(message: Message) -> str:
    """One message as one JSON line. Ids are strings (they exceed 2**53); bytes that are not
    UTF-8 go to `data_b64` with `data` null."""
    record: dict[str, Any] = {"id": str(message.id), "app": message.app,
                              "kind": message.kind.value}
    try:
        record["data"] = message.data.decode("utf-8")
    except UnicodeDecodeError:
        record["data"] = None
        record["data_b64"] = base64.b64encode(message.data).decode("ascii")
    if message.topic:
        record["topic"] = message.topic
    return json.dumps(record)


def closed_line(exc: PushwireError) -> str:
    """What `listen` says on stderr when the client stopped for good."""
    if isinstance(exc, ClientClosed):
        reason = f" ({exc.reason})" if exc.reason else ""
        return f"the room closed the connection with {exc.close_code}{reason}; not reconnecting"
    return exc.message


def run_listen(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    async def renew() -> str:     # a minted token that expires is minted again (close 4101)
        return mint(args, time.time())

    try:
        client = PushClient(args.dispatcher or dev_cluster().dispatcher, args.app, args.uid,
                            args.token or mint(args, time.time()), args.device, args.net,
                            args.heartbeat, connect_timeout_s=None,
                            renew_token=None if args.token else renew,
                            cafile=cafile_for(args.cafile))
    except UsageError as exc:
        return _fail("listen", str(exc), 2)
    try:
        return asyncio.run(listen(client, sys.stdout, args.count, args.timeout))
    except KeyboardInterrupt:
        return 130


async def listen(client: PushClient, out: TextIO, count: int = 0,
                 timeout_s: float | None = None) -> int:
    """Print and ack messages until `count` (0: no limit) or `timeout_s`; the exit code."""
    received = 0
    try:
        async with asyncio.timeout(timeout_s), client, \
                contextlib.aclosing(client.messages()) as messages:
            async for message in messages:
                out.write(message_line(message) + "\n")
                out.flush()
                await client.ack(message)
                received += 1
                if received == count:
                    break
    except TimeoutError:
        pass
    except PushwireError as exc:
        return _fail("listen", closed_line(exc), 1)
    return 0


# -- push ------------------------------------------------------------------------------------

def push_body(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of POST /v1/apps/{app}/push (services/center/api.py)."""
    body: dict[str, Any] = {"uids": list(dict.fromkeys(args.uids))}
    if args.data is not None:
        body["data"] = args.data
    else:
        try:
            base64.b64decode(args.data_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UsageError("--data-b64 is not valid base64") from exc
        body["data_b64"] = args.data_b64
    if args.device:
        body["device"] = args.device
    if args.ttl is not None:
        body["ttl_s"] = args.ttl
    if args.durable:
        body["durable"] = True
    return body


def error_line(status: int, text: str) -> str:
    """An HTTP error reply as one line: the status and center's JSON error message."""
    message = text.strip()[:200] or "(empty body)"
    with contextlib.suppress(ValueError):
        reply = json.loads(text)
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
    return f"HTTP {status}: {message}"


def run_push(args: argparse.Namespace) -> int:
    try:
        body = push_body(args)
        key = api_key_for(args.app, args.api_key)
    except UsageError as exc:
        return _fail("push", str(exc), 2)
    center = (args.center or dev_cluster().center).rstrip("/")
    url = f"{center}/v1/apps/{args.app}/push"
    try:
        status, text = asyncio.run(_post(url, key, body, args.timeout, args.cafile))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        return _fail("push", exc.message, 2)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail("push", f"cannot reach center at {center}: {exc or type(exc).__name__}", 1)
    if status >= 400:
        return _fail("push", error_line(status, text), 1)
    print(text.strip())
    return 0


async def _post(url: str, key: str, body: dict[str, Any], timeout_s: float,
                cafile: str | None = None) -> tuple[int, str]:
    async with http_session(url, timeout_s, cafile) as http, \
            http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        return response.status, await response.text()


def _fail(command: str, message: str, code: int) -> int:
    print(f"pushwire {command}: {message}", file=sys.stderr)
    return code
