"""`pushwire up | kick | app show | app set`: upstream, kicks and app configuration.

    pushwire up   --app demo --uid alice --type chat --data hi   # one UP; prints UP_REPLY
    pushwire kick --app demo --uid alice [--device D | --except-device D] [--reason R]
    pushwire app show demo                                        # the app config as JSON
    pushwire app set demo --webhook chat=http://127.0.0.1:9000/up \\
                          --status-webhook http://127.0.0.1:9000/status

`up` connects through the dispatcher like `pushwire listen` (token minted with the app's
secret unless --token), sends one UP and exits 0 when it was delivered, 1 otherwise. `kick`
goes through center (docs/api.md). `app` reads and writes the app configuration in discovery
(the dev cluster's, PUSHWIRE_DISCOVERY, or --discovery); every service watches it, so a
change applies live. Exit codes: 0 done, 1 refused or failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from cli import clients
from sdk.client import PushClient, UpReply
from services.kit.discovery import AppConfig, Discovery, connect
from services.kit.errors import ConfigError, PushwireError


def add_parsers(subs: Any) -> None:
    _add_up(subs)
    _add_kick(subs)
    _add_app(subs)


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


def _add_app(subs: Any) -> None:
    p = subs.add_parser("app", help="show or change an app's configuration (live)",
                        description="Read or change the app configuration kept in discovery; "
                                    "every service applies a change without restart.")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = acts.add_parser("show", help="print the app's configuration as JSON")
    show.add_argument("app")
    _discovery_flag(show)
    show.set_defaults(run=run_app_show)
    s = acts.add_parser("set", help="change fields of the app's configuration (creates it)",
                        description="Change the given fields, keep the others; print the result.")
    s.add_argument("app")
    _discovery_flag(s)
    s.add_argument("--webhook", action="append", default=[], metavar="TYPE=URL",
                   help="upstream webhook for TYPE; repeat for several")
    s.add_argument("--remove-webhook", action="append", default=[], metavar="TYPE")
    s.add_argument("--status-webhook", metavar="URL", help="online/offline events ('' to stop)")
    s.add_argument("--secret", action="append", metavar="SECRET",
                   help="token signing secret(s); replaces the list, first is current")
    s.add_argument("--webhook-secret", action="append", metavar="WHSEC",
                   help="webhook signing secret(s), whsec_<base64 of 24-64 bytes>; replaces the "
                        "list, each signs every request ('' to sign none)")
    s.add_argument("--api-key", action="append", metavar="KEY",
                   help="business API key(s); replaces the list")
    s.add_argument("--webhook-timeout", type=float, metavar="S", help="per webhook request")
    s.add_argument("--webhook-retries", type=int, metavar="N", help="extra attempts")
    s.add_argument("--webhook-backoff", type=float, metavar="S", help="first retry delay")
    s.add_argument("--status-debounce", type=float, metavar="S", help="offline debounce window")
    s.add_argument("--status-batch-max", type=int, metavar="N", help="events per status request")
    s.add_argument("--token-max-ttl", type=int, metavar="S", help="longest token lifetime")
    s.add_argument("--token-key", action="append", default=[], metavar="KID=PEMFILE",
                   help="RS256/ES256 public key (PEM file) under key id KID; repeat for several")
    s.add_argument("--remove-token-key", action="append", default=[], metavar="KID")
    s.add_argument("--jwks-url", metavar="URL", help="JWKS of the token keys ('' for none)")
    s.add_argument("--token-leeway", type=int, metavar="S", help="clock skew allowed (0-300)")
    s.set_defaults(run=run_app_set)


def _discovery_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--discovery", help="zk://... or file:... (default: PUSHWIRE_DISCOVERY, "
                                       "then the dev cluster)")


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


# -- app show / set ------------------------------------------------------------------------------

def discovery_url(flag: str | None) -> str:
    found = flag or clients.dev_cluster().discovery
    if not found:
        raise clients.UsageError("no discovery: pass --discovery, set PUSHWIRE_DISCOVERY or "
                                 "run `pushwire dev`")
    return found


def app_json(app: AppConfig) -> str:
    return json.dumps(json.loads(app.to_json()), indent=2, sort_keys=True)


def changed(current: AppConfig | None, args: argparse.Namespace) -> AppConfig:
    """`current` (or a new app) with the fields `args` sets; ConfigError when invalid."""
    app = current or AppConfig(id=args.app)
    webhooks = dict(app.webhooks)
    for spec in args.webhook:
        kind, sep, url = spec.partition("=")
        if not sep or not kind or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook wants TYPE=http(s)://..., got {spec!r}")
        webhooks[kind] = url
    for kind in args.remove_webhook:
        webhooks.pop(kind, None)
    fields: dict[str, Any] = {"webhooks": webhooks, "token_keys": _token_keys(app, args)}
    options = {"status_webhook": args.status_webhook, "webhook_timeout_s": args.webhook_timeout,
               "webhook_retries": args.webhook_retries, "webhook_backoff_s": args.webhook_backoff,
               "status_debounce_s": args.status_debounce,
               "status_batch_max": args.status_batch_max,
               "token_max_ttl_s": args.token_max_ttl,
               "jwks_url": args.jwks_url, "token_leeway_s": args.token_leeway,
               "secrets": tuple(args.secret) if args.secret else None,
               "webhook_secrets": tuple(filter(None, args.webhook_secret))
               if args.webhook_secret else None,
               "api_keys": tuple(args.api_key) if args.api_key else None}
    fields.update({k: v for k, v in options.items() if v is not None})
    if fields.get("status_webhook") and not str(fields["status_webhook"]).startswith(
            ("http://", "https://")):
        raise ConfigError("--status-webhook must be an http(s):// URL (or '' to stop)")
    return dataclasses.replace(app, **fields)


def _token_keys(app: AppConfig, args: argparse.Namespace) -> dict[str, str]:
    """The app's token keys with --token-key KID=PEMFILE added, --remove-token-key removed."""
    keys = dict(app.token_keys)
    for spec in args.token_key:
        kid, sep, path = spec.partition("=")
        if not sep or not kid or not path:
            raise ConfigError(f"--token-key wants KID=PEMFILE, got {spec!r}")
        try:
            keys[kid] = Path(path).expanduser().read_text()
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"--token-key {kid}: cannot read {path}: {exc}") from exc
    for kid in args.remove_token_key:
        keys.pop(kid, None)
    return keys


def run_app_show(args: argparse.Namespace) -> int:
    return _run_app(args, _show)


def run_app_set(args: argparse.Namespace) -> int:
    return _run_app(args, _set)


def _run_app(args: argparse.Namespace, action: Any) -> int:
    try:
        url = discovery_url(args.discovery)
        discovery = connect(url)
    except (clients.UsageError, ConfigError) as exc:
        return _fail("app", str(exc), 2)
    try:
        result: int = asyncio.run(_with(discovery, args, action))
    except KeyboardInterrupt:
        return 130
    return result


async def _with(discovery: Discovery, args: argparse.Namespace, action: Any) -> int:
    try:
        await discovery.start(())
        code: int = await action(discovery, args)
        return code
    except PushwireError as exc:
        return _fail("app", exc.message, 2 if isinstance(exc, ConfigError) else 1)
    finally:
        await discovery.close()


async def _show(discovery: Discovery, args: argparse.Namespace) -> int:
    app = discovery.app(args.app)
    if app is None:
        return _fail("app", f"no app {args.app!r}", 1)
    print(app_json(app))
    return 0


async def _set(discovery: Discovery, args: argparse.Namespace) -> int:
    app = changed(discovery.app(args.app), args)
    await discovery.put_app(app)
    print(app_json(app))
    return 0


def _fail(command: str, message: str, code: int) -> int:
    print(f"pushwire {command}: {message}", file=sys.stderr)
    return code
