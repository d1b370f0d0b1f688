"""The cluster credential on internal gRPC: clients attach it, servers refuse calls without it.

Every internal call carries `authorization: Bearer <cluster secret>` (metadata), added by a
channel interceptor (`Attach`) that `grpcio.channel` installs, so no call site deals with it.
Every server runs `Require` before any servicer: a call without the secret, with another one,
or to a method that does not exist, ends with UNAUTHENTICATED before its request is even
parsed; only the health Check (`OPEN_METHODS`) is open to every caller. The comparison is
of SHA-256 digests with `hmac.compare_digest`: constant time, and the secret's length does
not leak either. docs/security.md says why a shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import grpc
import grpc.aio

from services.kit import metrics
from services.kit.logs import Sparse

log = logging.getLogger("pushwire.rpc")

HEADER = "authorization"
SCHEME = "Bearer "
REFUSED = "cluster credential required"
WARN_EVERY_S = 10.0          # at most one log line per this long about refused calls
# Methods anyone may call: probes send no metadata (services/kit/rpc/health.py, docs/security.md
# §3). A Check answers SERVING or NOT_SERVING and does nothing else.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check"})


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


class Attach(grpc.aio.UnaryUnaryClientInterceptor):
    """Client side: add the credential to every unary call of a channel. Every internal
    method is unary (the pipes batch instead of streaming); a streaming one would need the
    matching interceptor here, or `Require` refuses our own calls to it."""

    def __init__(self, secret: str) -> None:
        self._entry = (HEADER, SCHEME + secret)

    async def intercept_unary_unary(self, continuation: Callable[[Any, Any], Awaitable[Any]],
                                    details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return await continuation(details._replace(metadata=metadata), request)


class Require(grpc.aio.ServerInterceptor):
    """Server side: pass calls that carry one of the `accepted` secrets, refuse every other
    (several during a rotation, docs/security.md §4)."""

    def __init__(self, accepted: Sequence[str]) -> None:
        self._expected = [_digest(SCHEME + secret) for secret in accepted]
        self._refused = metrics.RPC_UNAUTHENTICATED
        self._lines = Sparse(log, WARN_EVERY_S)

    def allows(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        """True when `metadata` carries the cluster credential."""
        given = next((value for key, value in metadata or () if key == HEADER), None)
        if given is None:
            return False
        digest = _digest(given)
        matches = [hmac.compare_digest(digest, expected) for expected in self._expected]
        return any(matches)     # every secret compared: the time says nothing about which

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        if details.method in OPEN_METHODS or self.allows(details.invocation_metadata):
            return await continuation(details)
        # No request deserializer: an unauthenticated request is never parsed.
        return grpc.unary_unary_rpc_method_handler(partial(self._refuse, details.method))

    async def _refuse(self, method: str, _request: bytes,
                      context: grpc.aio.ServicerContext) -> None:
        self.refused(method, context.peer())
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

    def refused(self, what: str, peer: str) -> None:
        """Count a refusal of `what` (a method, or the wire) from `peer`; log at most one
        line per WARN_EVERY_S."""
        self._refused.inc()
        self._lines.note("refused %d internal call(s) without the cluster credential "
                         "(last: %.100s from %s)", what, peer)
