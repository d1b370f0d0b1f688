"""The one exception tree of pushwire.

    PushwireError                 code, fatal, public message; internal detail goes to logs
    ├── ConfigError               bad configuration at start-up (fatal for the process)
    ├── ProtocolError             a client broke docs/protocol.md (fatal: close)
    ├── AuthError                 bad, expired or revoked token / API key (fatal: close)
    │   └── Kicked                the token predates a kick of its user/device (close 4102)
    ├── BadRequest                a request field is invalid (shape, type, range, encoding)
    ├── LimitError                a bound was hit: rate, quota, connections (per call)
    │   └── TooLarge              a body or a field is larger than its bound
    ├── NotFound                  unknown app, message, instance
    ├── Conflict                  it exists already (an app created twice)
    ├── Unavailable               a dependency cannot be reached now (retry later)
    │   ├── Disconnected          a call's connection failed (reset, GOAWAY, peer restarting)
    │   └── Overloaded            a task pool refused work (queue full, policy "reject")
    └── StoreError                Redis / MySQL / SQLite failed underneath (from the boundary)

Foreign exceptions (grpc, redis, aiomysql, kazoo) are translated in their boundary modules
with `raise ... from exc`. Codes are stable and documented in docs/protocol.md §7; HTTP and
gRPC status mappings live next to each boundary (services/kit/http.py, services/kit/rpc).
"""

from __future__ import annotations

from typing import ClassVar


class PushwireError(Exception):
    """Base error; `code` is the machine code clients see, `fatal` closes a connection."""

    code: ClassVar[int] = 1000
    fatal: ClassVar[bool] = False

    def __init__(self, message: str = "", *, detail: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.detail = detail  # for logs only

    def __str__(self) -> str:
        """For logs: the public message and the internal detail. Never sent to a client,
        which gets `message` alone (the room's ERROR packets, the HTTP error body)."""
        return f"{self.message} ({self.detail})" if self.detail else self.message


class ConfigError(PushwireError):
    code = 1001
    fatal = True


class ProtocolError(PushwireError):
    code = 1002
    fatal = True


class BadRequest(PushwireError):
    code = 1003


class AuthError(PushwireError):
    code = 1004
    fatal = True


class Kicked(AuthError):
    """The session's token was issued at or before a kick of its (app, uid[, device])."""

    code = 1010


class LimitError(PushwireError):
    code = 1005


class TooLarge(LimitError):
    """A request body or field is over its size bound (HTTP 413; same code as LimitError)."""


class NotFound(PushwireError):
    code = 1006


class Conflict(PushwireError):
    code = 1011


class Unavailable(PushwireError):
    code = 1007


class Disconnected(Unavailable):
    """The connection under an internal call failed (reset, GOAWAY, refused): the peer did not
    answer, it may or may not have processed the request. Safe to re-send only when the method
    is idempotent (services/kit/rpc/pipe.py)."""


class Overloaded(Unavailable):
    code = 1008


class StoreError(PushwireError):
    code = 1009


BY_CODE: dict[int, type[PushwireError]] = {
    cls.code: cls
    for cls in (PushwireError, ConfigError, ProtocolError, BadRequest, AuthError, LimitError,
                NotFound, Conflict, Unavailable, Overloaded, StoreError, Kicked)
}


def from_code(code: int, message: str, detail: str = "") -> PushwireError:
    """Rebuild an error carried across a service boundary by its code."""
    return BY_CODE.get(code, PushwireError)(message, detail=detail)
