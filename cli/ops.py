"""`pushwire up | kick`: upstream and kicks (`pushwire app` is cli/appcmds.py).

    pushwire up   --app demo --uid alice --type chat --data hi   # one UP; prints UP_REPLY
    pushwire kick --app demo --uid alice [--device D | --except-device D] [--reason R]

`up` connects through the dispatcher like `pushwire listen` (token minted with the app's
secret unless --token), sends one UP and exits 0 when it was delivered, 1 otherwise. `kick`
goes through center (docs/api.md). Exit codes: 0 done, 1 refused or failed, 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import sys
import time
from typing import Any

import aiohttp

from cli import clients
from pushwire_protocol.errors import PushwireError
from pushwire_sdk.client import PushClient, UpReply


def add_parsers(subs: Any) -> None:
    _add_up(subs)
    _add_kick(subs)


def _add_up(subs: Any) -> None:
    p = subs.add_parser(
        "up", help="send one upstream message as a client and print the UP_REPLY",
        description="Connect as (app, uid, device), send UP{app, type, data} to the app's "
                    "webhook for TYPE through the room and coordinator, print the UP_REPLY as "
                    "JSON. Exit 0 when delivered, 1 when rejected or failed.")
    p.add_argument("--app", required=True)
    p.add_argument("--uid", required=True)
    p.add_argument("--device", default="cli", help="device id (default: %(default)r)")
    p.add_argument("--type", required=True, help="upstream type (selects the webhook)")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="message text (sent as UTF-8)")
    data.add_argument("--data-b64", help="message bytes, base64")
    p.add_argument("--dispatcher", help="dispatcher URL (default: PUSHWIRE_DISPATCHER_URL, "
                                        "then the dev cluster)")
    p.add_argument("--token", help="client token (default: minted with the app's secret)")
    p.add_argument("--secret", help="app secret to mint the token with")
    p.add_argument("--ttl", type=int, default=3600, help="validity of a minted token (s)")
    p.add_argument("--timeout", type=float, default=15.0,
                   help="seconds for connecting and for the reply (%(default)s)")
    p.set_defaults(run=run_up)


def _add_kick(subs: Any) -> None:
    p = subs.add_parser(
        "kick", help="kick a user's sessions through center",
        description="POST {center}/v1/apps/{app}/users/{uid}/kick: the user's sessions (or "
                    "one device's, or all but one device's) get KICK and close with 4102; "
                    "their tokens issued until now no longer connect. Prints the JSON reply.")
    p.add_argument("--app", required=True)
    p.add_argument("--uid", required=True)
    p.add_argument("--device", help="kick this device only")
    p.add_argument("--except-device", help="kick every device but this one")
    p.add_argument("--reason", default="", help="sent to the client in KICK")
    p.add_argument("--center", help="center URL (default: PUSHWIRE_CENTER_URL, then dev cluster)")
    p.add_argument("--api-key", help="API key (default: PUSHWIRE_API_KEY, then dev cluster)")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in s")
    p.set_defaults(run=run_kick)


# -- up ----------------------------------------------------------------------------------------

def up_body(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        return str(args.data).encode()
    try:
        return base64.b64decode(args.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise clients.UsageError("--data-b64 is not valid base64") from exc


def reply_line(reply: UpReply) -> str:
    return json.dumps({"outcome": reply.outcome, "status": reply.status, "detail": reply.detail})


def run_up(args: argparse.Namespace) -> int:
    try:
        body = up_body(args)
        client = PushClient(args.dispatcher or clients.dev_cluster().dispatcher, args.app,
                            args.uid, args.token or clients.mint(args, time.time()),
                            args.device, connect_timeout_s=args.timeout,
                            cafile=clients.cafile_for(None))
    except clients.UsageError as exc:
        return _fail("up", str(exc), 2)
    try:
        return asyncio.run(up(client, args.app, args.type, body, args.timeout))
    except KeyboardInterrupt:
        return 130


async def up(client: PushClient, app: str, type: str, body: bytes, timeout_s: float) -> int:
    """Send one UP and print its reply; the exit code."""
    try:
        async with client:
            reply = await client.send_up(app, type, body, timeout_s=timeout_s)
    except PushwireError as exc:
        return _fail("up", clients.closed_line(exc), 1)
    print(reply_line(reply))
    return 0 if reply.outcome == "delivered" else 1


# -- kick --------------------------------------------------------------------------------------

def kick_body(args: argparse.Namespace) -> dict[str, str]:
    body = {"reason": args.reason}
    if args.device:
        body["device"] = args.device
    if args.except_device:
        body["except_device"] = args.except_device
    return body


def run_kick(args: argparse.Namespace) -> int:
    try:
        key = clients.api_key_for(args.app, args.api_key)
    except clients.UsageError as exc:
        return _fail("kick", str(exc), 2)
    center = (args.center or clients.dev_cluster().center).rstrip("/")
    url = f"{center}/v1/apps/{args.app}/users/{args.uid}/kick"
    try:
        status, text = asyncio.run(_post(url, key, kick_body(args), args.timeout))
    except KeyboardInterrupt:
        return 130
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail("kick", f"cannot reach center at {center}: {exc!r}", 1)
    if status >= 400:
        return _fail("kick", clients.error_line(status, text), 1)
    print(text.strip())
    return 0


async def _post(url: str, key: str, body: dict[str, str], timeout_s: float) -> tuple[int, str]:
    async with clients.http_session(url, timeout_s) as http, \
            http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        return response.status, await response.text()


# -- discovery (`pushwire rooms`, `pushwire drain`) ------------------------------------------

def discovery_url(flag: str | None) -> str:
    found = flag or clients.dev_cluster().discovery
    if not found:
        raise clients.UsageError("no discovery: pass --discovery, set PUSHWIRE_DISCOVERY or "
                                 "run `pushwire dev`")
    return found


def _fail(command: str, message: str, code: int) -> int:
    print(f"pushwire {command}: {message}", file=sys.stderr)
    return code
