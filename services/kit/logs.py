"""Logging: one logger per service, greppable lines with per-connection context.

Two formats (`log_format`, docs/config.md "Logs"):

    text  2026-11-30 10:00:00,123 INFO room[room-0] pushwire.room: listening on ...
    json  {"ts": "2026-11-30T10:00:00.123Z", "level": "info", "service": "room",
           "instance": "room-0", "logger": "pushwire.room", "message": "listening on ...",
           "app": "demo", "uid": "u1", "conn": "s-1a2b", "message_id": "42"}

One event per line in both. The context fields (`CONTEXT_FIELDS`) come from two places, so a
hot path pays nothing for them until a line is actually written:

- `extra={"app": ..., "uid": ...}` on the logging call (a connection's own lines: it knows);
- `context(app=..., uid=...)`, a contextvar that holds for the current task and the tasks it
  starts (center binds the app and uid of the request path for the whole request).

In text, context fields follow the message as `key=value`. A field set to None is left out.
Secrets never reach a log line: no code passes a token, key or secret to a logger (a test
greps every service's log for them, tests/integration/test_logs.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import suppress
from contextvars import ContextVar, Token
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from services.kit.config import ServiceConfig

CONTEXT_FIELDS = ("app", "uid", "device", "conn", "message_id", "room")
# An HTTP access line's fields (services/kit/http.py): JSON carries them apart, text has
# them in the message already.
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "remote")

# Libraries whose debug lines show what passes through them (websockets logs the first bytes
# of every frame, and an AUTH packet carries the client's token; kazoo logs the data it
# writes, and an app's configuration holds its secrets): never below INFO.
QUIET = ("websockets", "kazoo", "aiohttp.access", "aiohttp.client", "aiomysql", "redis")

# The task's context fields as (name, value) pairs: immutable, so a task copies them cheaply.
_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("pushwire_log_context",
                                                                 default=())


class context:
    """Add `fields` to every log line written by this task (and tasks it starts) inside the
    block. A class rather than a generator context manager: center enters one per request."""

    __slots__ = ("_added", "_token")

    def __init__(self, **fields: str | int | None) -> None:
        self._added = tuple((k, str(v)) for k, v in fields.items() if v is not None)
        self._token: Token[tuple[tuple[str, str], ...]] | None = None

    def __enter__(self) -> None:
        held, added = _context.get(), self._added
        self._token = _context.set(tuple({**dict(held), **dict(added)}.items()) if held
                                   else added)

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _context.reset(self._token)


class Sparse:
    """One line per `every_s` about events that may come by the thousand (refused calls,
    refused clients): the first at once, then how many came since, with the last one's
    words. What a reader needs to count them exactly is a metric, not this line."""

    __slots__ = ("_every_s", "_log", "_logged_at", "_unlogged")

    def __init__(self, logger: logging.Logger, every_s: float) -> None:
        self._log = logger
        self._every_s = every_s
        self._unlogged = 0
        self._logged_at = float("-inf")

    def note(self, fmt: str, *args: object) -> None:
        """Count one event; log `fmt % (count, *args)` at WARNING when the last line is
        older than `every_s` (count: the events since that line, this one included)."""
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= self._every_s:
            self._log.warning(fmt, self._unlogged, *args)
            self._unlogged, self._logged_at = 0, now


def safe_url(url: str) -> str:
    """`url` for a log line: without user, password, query and fragment, where a credential
    may be (`https://user:pass@host/path?token=...` -> `https://host/path`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    with suppress(ValueError):          # a port out of range: leave it out
        netloc += f":{parts.port}" if parts.port is not None else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def fields_of(record: logging.LogRecord) -> dict[str, str]:
    """The context fields of `record`: the task's context, then the call's `extra`."""
    out = dict(_context.get())
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            out[name] = str(value)
    return out


class TextFormatter(logging.Formatter):
    """The plain format, with context fields appended as key=value."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service}[{instance}] %(name)s: "
                         "%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = fields_of(record)
        return line + "".join(f" {k}={v}" for k, v in extra.items()) if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, instance, logger, message, the context
    fields, and `exc` (the traceback) when there is one."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _utc(record.created), "level": record.levelname.lower(),
            "service": self.service, "instance": self.instance, "logger": record.name,
            "message": record.getMessage(), **fields_of(record)}
        event.update({k: record.__dict__[k] for k in ACCESS_FIELDS if k in record.__dict__})
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + \
        f".{int(created % 1 * 1000):03d}Z"


def formatter(service: str, instance: str, fmt: str) -> logging.Formatter:
    return JsonFormatter(service, instance) if fmt == "json" else TextFormatter(service, instance)


def setup(service: str, config: ServiceConfig) -> logging.Logger:
    """Configure the root handler once per process; return the service's logger."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter(service, config.instance, config.log_format))
        root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    return logging.getLogger(f"pushwire.{service}")

