"""`pushwire app list | show | set | delete | rotate`: app configuration through center's
admin API (docs/api.md §4), so operators need no access to ZooKeeper.

    pushwire app list
    pushwire app show demo [--reveal]                     # secrets and API keys masked
    pushwire app set demo --webhook chat=http://127.0.0.1:9000/up --set max_body=131072
    pushwire app rotate demo --secret --overlap 3600      # prints the new secret
    pushwire app delete demo

Where center is: --center, else PUSHWIRE_CENTER_URL, else the running `pushwire dev`
cluster; its admin key: --admin-key, else PUSHWIRE_ADMIN_KEY, else the dev cluster's. `set`
creates the app when it does not exist (with a random secret and API key unless given) and
changes only the fields it names; every service applies a change without restart.
`show` and `set` also take --discovery zk://... | file:... to work on discovery directly, for
bootstrapping an app before any center runs (that needs access to ZooKeeper).
Exit codes: 0 done, 1 refused or failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from cli import clients
from pushwire_protocol.errors import BadRequest, ConfigError, NotFound, PushwireError
from services.center.admin import Apps, view
from services.kit.discovery import connect

Result = tuple[int, Any]          # (HTTP status, JSON body)
T = TypeVar("T")


def add_parsers(subs: Any) -> None:
    p = subs.add_parser("app", help="list, show, change, rotate or delete apps (live)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = acts.add_parser("list", help="every app's configuration, credentials masked")
    _center_flags(lst, reveal=True)
    lst.set_defaults(run=run_list)
    show = acts.add_parser("show", help="print the app's configuration as JSON")
    show.add_argument("app")
    _center_flags(show, discovery=True, reveal=True)
    show.set_defaults(run=run_show)
    _add_set(acts)
    rot = acts.add_parser("rotate", help="add a new secret or API key; the old ones keep "
                                         "working for --overlap seconds, then stop")
    rot.add_argument("app")
    which = rot.add_mutually_exclusive_group(required=True)
    which.add_argument("--secret", action="store_const", dest="kind", const="secrets")
    which.add_argument("--api-key", action="store_const", dest="kind", const="api_keys")
    rot.add_argument("--overlap", type=float, default=86400.0,
                     help="seconds the old ones keep working (default: %(default)s)")
    rot.add_argument("--value", help="the new credential (default: a random one)")
    _center_flags(rot)
    rot.set_defaults(run=run_rotate)
    delete = acts.add_parser("delete", help="remove the app (its clients are refused)")
    delete.add_argument("app")
    _center_flags(delete)
    delete.set_defaults(run=run_delete)


def _add_set(acts: Any) -> None:
    s = acts.add_parser("set", help="change fields of the app's configuration (creates it)",
                        description="Change the given fields, keep the others; print the result "
                                    "(credentials masked unless --reveal).")
    s.add_argument("app")
    _center_flags(s, discovery=True, reveal=True)
    s.add_argument("--webhook", action="append", default=[], metavar="TYPE=URL",
                   help="upstream webhook for TYPE; repeat for several")
    s.add_argument("--remove-webhook", action="append", default=[], metavar="TYPE")
    s.add_argument("--status-webhook", metavar="URL", help="online/offline events ('' to stop)")
    s.add_argument("--secret", action="append", metavar="SECRET",
                   help="token signing secret(s); replaces the list, first is current")
    s.add_argument("--api-key", action="append", metavar="KEY",
                   help="business API key(s); replaces the list")
    s.add_argument("--webhook-timeout", type=float, metavar="S", help="per webhook request")
    s.add_argument("--webhook-retries", type=int, metavar="N", help="extra attempts")
    s.add_argument("--webhook-backoff", type=float, metavar="S", help="first retry delay")
    s.add_argument("--status-debounce", type=float, metavar="S", help="offline debounce window")
    s.add_argument("--status-batch-max", type=int, metavar="N", help="events per status request")
    s.add_argument("--token-max-ttl", type=int, metavar="S", help="longest token lifetime")
    s.add_argument("--webhook-secret", action="append", metavar="WHSEC",
                   help="webhook signing secret(s), whsec_<base64 of 24-64 bytes>; replaces the "
                        "list, each signs every request ('' to sign none)")
    s.add_argument("--token-key", action="append", default=[], metavar="KID=PEMFILE",
                   help="RS256/ES256 public key (PEM file) under key id KID; repeat for several")
    s.add_argument("--remove-token-key", action="append", default=[], metavar="KID")
    s.add_argument("--jwks-url", metavar="URL", help="JWKS of the token keys ('' for none)")
    s.add_argument("--token-leeway", type=int, metavar="S", help="clock skew allowed (0-300)")
    s.add_argument("--set", action="append", default=[], dest="fields", metavar="FIELD=VALUE",
                   help="any field of the app configuration (`pushwire app show` lists them); "
                        "VALUE is JSON (42, true, [\"10.0.0.0/8\"]) or else text")
    s.set_defaults(run=run_set)


def _center_flags(p: argparse.ArgumentParser, discovery: bool = False,
                  reveal: bool = False) -> None:
    p.add_argument("--center", help="center URL (default: PUSHWIRE_CENTER_URL, then the dev "
                                    "cluster)")
    p.add_argument("--admin-key", help="center's admin key (default: PUSHWIRE_ADMIN_KEY, then "
                                       "the dev cluster's)")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in s")
    if reveal:
        p.add_argument("--reveal", action="store_true",
                       help="print secrets and API keys in clear")
    if discovery:
        p.add_argument("--discovery", help="work on discovery directly (zk://... or file:...), "
                                           "not through center: to bootstrap")


# -- what `set` changes --------------------------------------------------------------------------

FLAGS = {"status_webhook": "status_webhook", "webhook_timeout_s": "webhook_timeout",
         "webhook_retries": "webhook_retries", "webhook_backoff_s": "webhook_backoff",
         "status_debounce_s": "status_debounce", "status_batch_max": "status_batch_max",
         "token_max_ttl_s": "token_max_ttl", "jwks_url": "jwks_url",
         "token_leeway_s": "token_leeway"}


def changes(current: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """The fields `args` sets, as JSON for the admin API (webhooks merged into `current`'s);
    UsageError for a flag that cannot be right."""
    out: dict[str, Any] = {}
    for spec in args.fields:
        name, sep, raw = spec.partition("=")
        if not sep or not name:
            raise clients.UsageError(f"--set wants FIELD=VALUE, got {spec!r}")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    out.update({name: getattr(args, flag) for name, flag in FLAGS.items()
                if getattr(args, flag) is not None})
    if args.secret:
        out["secrets"] = list(args.secret)
    if args.api_key:
        out["api_keys"] = list(args.api_key)
    if args.webhook_secret:
        out["webhook_secrets"] = [w for w in args.webhook_secret if w]
    if args.webhook or args.remove_webhook:
        out["webhooks"] = _webhooks(dict((current or {}).get("webhooks", {})), args)
    if args.token_key or args.remove_token_key:
        out["token_keys"] = _token_keys(dict((current or {}).get("token_keys", {})), args)
    return out


def _token_keys(keys: dict[str, str], args: argparse.Namespace) -> dict[str, str]:
    """`keys` with --token-key KID=PEMFILE added and --remove-token-key removed."""
    for spec in args.token_key:
        kid, sep, path = spec.partition("=")
        if not sep or not kid or not path:
            raise clients.UsageError(f"--token-key wants KID=PEMFILE, got {spec!r}")
        try:
            keys[kid] = Path(path).expanduser().read_text()
        except (OSError, UnicodeError) as exc:
            raise clients.UsageError(f"--token-key {kid}: cannot read {path}: {exc}") from exc
    for kid in args.remove_token_key:
        keys.pop(kid, None)
    return keys


def _webhooks(webhooks: dict[str, str], args: argparse.Namespace) -> dict[str, str]:
    for spec in args.webhook:
        kind, sep, url = spec.partition("=")
        if not sep or not kind or not url.startswith(("http://", "https://")):
            raise clients.UsageError(f"--webhook wants TYPE=http(s)://..., got {spec!r}")
        webhooks[kind] = url
    for kind in args.remove_webhook:
        webhooks.pop(kind, None)
    return webhooks


# -- through center -------------------------------------------------------------------------------

class Admin:
    """center's admin API, for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        cluster = clients.dev_cluster()
        self.center = (args.center or cluster.center).rstrip("/")
        self.key = args.admin_key or os.environ.get("PUSHWIRE_ADMIN_KEY") or cluster.admin_key
        if not self.key:
            raise clients.UsageError("no admin key: pass --admin-key, set PUSHWIRE_ADMIN_KEY or "
                                     "run `pushwire dev`")
        self.timeout_s: float = args.timeout

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Result:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.request(method, f"{self.center}/v1/admin{path}", json=body,
                             headers={"Authorization": f"Bearer {self.key}"}) as response:
            text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


def _query(args: argparse.Namespace) -> str:
    return "?reveal=true" if getattr(args, "reveal", False) else ""


async def _list(admin: Admin, args: argparse.Namespace) -> Result:
    return await admin.call("GET", "/apps" + _query(args))


async def _show(admin: Admin, args: argparse.Namespace) -> Result:
    return await admin.call("GET", f"/apps/{args.app}" + _query(args))


async def _set(admin: Admin, args: argparse.Namespace) -> Result:
    status, current = await admin.call("GET", f"/apps/{args.app}")
    if status == 404:
        status, created = await admin.call("POST", "/apps", {"id": args.app,
                                                             **changes(None, args)})
        if status == 201 and not args.reveal:
            created = (await admin.call("GET", f"/apps/{args.app}"))[1]
        return status, created
    if status != 200:
        return status, current
    return await admin.call("PATCH", f"/apps/{args.app}" + _query(args),
                            changes(current, args))


async def _rotate(admin: Admin, args: argparse.Namespace) -> Result:
    body: dict[str, Any] = {"overlap_s": args.overlap}
    if args.value:
        body["value"] = args.value
    kind = "secrets" if args.kind == "secrets" else "api-keys"
    return await admin.call("POST", f"/apps/{args.app}/{kind}/rotate", body)


async def _delete(admin: Admin, args: argparse.Namespace) -> Result:
    return await admin.call("DELETE", f"/apps/{args.app}")


def run_list(args: argparse.Namespace) -> int:
    return _run(args, _list)


def run_show(args: argparse.Namespace) -> int:
    return _run(args, _show, _show_direct)


def run_set(args: argparse.Namespace) -> int:
    return _run(args, _set, _set_direct)


def run_rotate(args: argparse.Namespace) -> int:
    if args.overlap < 0:
        return _fail("--overlap must be >= 0", 2)
    return _run(args, _rotate)


def run_delete(args: argparse.Namespace) -> int:
    return _run(args, _delete)


def run_admin(make: Callable[[], Coroutine[Any, Any, T]],
              fail: Callable[[str, int], int]) -> T | int:
    """Run the coroutine `make` builds (a call of center's admin API); when it cannot run or
    reach center, the exit code `fail` gives after saying why (2 bad usage, 1 unreachable),
    130 on ^C."""
    try:
        return asyncio.run(make())
    except KeyboardInterrupt:
        return 130
    except clients.UsageError as exc:
        return fail(str(exc), 2)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return fail(f"cannot reach center: {exc or type(exc).__name__}", 1)


Action = Callable[[Admin, argparse.Namespace], Coroutine[Any, Any, Result]]
Direct = Callable[[Apps, argparse.Namespace], Coroutine[Any, Any, Result]]


def _run(args: argparse.Namespace, action: Action, direct: Direct | None = None) -> int:
    if direct is not None and args.discovery:
        outcome = run_admin(lambda: _with_discovery(args, direct), _fail)
    else:
        outcome = run_admin(lambda: action(Admin(args), args), _fail)
    if isinstance(outcome, int):
        return outcome
    status, body = outcome
    if status >= 400:
        message = clients.error_line(status, json.dumps(body))
        return _fail(message, 2 if status == 400 else 1)
    print(json.dumps(body, indent=2, sort_keys=True))
    return 0


# -- directly on discovery (bootstrap) -------------------------------------------------------

async def _with_discovery(args: argparse.Namespace, direct: Direct) -> Result:
    try:
        discovery = connect(args.discovery)
    except ConfigError as exc:
        raise clients.UsageError(exc.message) from exc
    await discovery.start(())
    try:
        return await direct(Apps(discovery), args)
    except NotFound:
        return 404, {"error": {"code": NotFound.code, "message": f"no app {args.app!r}"}}
    except (BadRequest, ConfigError) as exc:
        return 400, {"error": {"code": exc.code, "message": exc.message}}
    except PushwireError as exc:
        return 503, {"error": {"code": exc.code, "message": exc.message}}
    finally:
        await discovery.close()


async def _show_direct(apps: Apps, args: argparse.Namespace) -> Result:
    return 200, view(apps.get(args.app), args.reveal)


async def _set_direct(apps: Apps, args: argparse.Namespace) -> Result:
    try:
        current = view(apps.get(args.app), reveal=False)
    except NotFound:
        return 200, view(await apps.create({"id": args.app, **changes(None, args)}),
                         args.reveal)
    return 200, view(await apps.update(args.app, changes(current, args)), args.reveal)


def _fail(message: str, code: int) -> int:
    print(f"pushwire app: {message}", file=sys.stderr)
    return code
