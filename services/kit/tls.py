"""TLS on the listeners that face clients: the room's `wss://`, dispatcher's and center's `https://`.

    context = ServerTls.started(config, life)   # None when the config names no certificate
    server = await loop.create_server(..., ssl=context)

A listener keeps the one context it was started with; that context's SNI callback (OpenSSL
calls it on every handshake, with or without a server name) hands the handshake to the current
context, which a reload replaces with one built afresh from the files. So new connections get
the new certificate and connections already open keep theirs. Files that do not load
(half-written, a key that does not match) leave the current context in place and are logged;
the next change or SIGHUP tries again.

Internal gRPC does not use this: it is authenticated by the cluster secret and meant for a
private network (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

from pushwire_protocol.errors import ConfigError
from services.kit.lifecycle import Lifecycle

log = logging.getLogger("pushwire.tls")


@dataclass(frozen=True)
class TlsConfig:
    """The TLS fields of a service with a public listener (room, dispatcher, center); mixed
    into their config dataclasses, so env PUSHWIRE_TLS_CERT_FILE sets all three."""

    tls_cert_file: str = ""            # PEM certificate chain; empty: plain ws:// / http://
    tls_key_file: str = ""             # PEM private key of the certificate
    tls_reload_s: float = 5.0          # check the files for a change this often; 0: SIGHUP only

    def validate_tls(self) -> None:
        """ConfigError unless both files or neither are set (and loadable), reload_s >= 0."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("set both tls_cert_file and tls_key_file, or neither")
        if self.tls_reload_s < 0:
            raise ConfigError("tls_reload_s must be >= 0")
        if self.tls_cert_file:
            server_context(Path(self.tls_cert_file), Path(self.tls_key_file))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context serving the certificate chain in `cert` with the key in `key`
    (TLS 1.2 at least); ConfigError when they cannot be read or do not match."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} with key {key}: {exc}") from exc
    return context


def _signature(paths: tuple[Path, Path]) -> tuple[tuple[int, int, int], ...]:
    """What changes when either file is rewritten or replaced (rename into place)."""
    stats = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stats.append((0, 0, 0))
        else:
            stats.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(stats)


class ServerTls:
    """The reloadable certificate of one listener."""

    def __init__(self, cert: Path, key: Path) -> None:
        """Load the files now (ConfigError when they do not serve)."""
        self.paths = (cert, key)
        self._seen = _signature(self.paths)
        self._current = server_context(cert, key)
        self.context = server_context(cert, key)    # the listener's; it only forwards
        self.context.sni_callback = self._choose
        self.reloads = 0

    @classmethod
    def of(cls, config: TlsConfig) -> ServerTls | None:
        """The listener TLS `config` asks for; None for a plain listener."""
        if not config.tls_cert_file:
            return None
        return cls(Path(config.tls_cert_file), Path(config.tls_key_file))

    @classmethod
    def started(cls, config: TlsConfig, life: Lifecycle) -> ssl.SSLContext | None:
        """The context for the listener `config` asks for (None: plain), its reloads running
        in `life` (file changes every `tls_reload_s`, SIGHUP)."""
        tls = cls.of(config)
        if tls is None:
            return None
        life.spawn(tls.watch(config.tls_reload_s), "tls-reload")
        return tls.context

    def _choose(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None,
                _context: ssl.SSLContext) -> None:
        conn.context = self._current

    def reload(self) -> bool:
        """Load the files again; new handshakes use them when they load (True). On failure the
        current certificate stays and the error is logged (False)."""
        self._seen = _signature(self.paths)
        try:
            self._current = server_context(*self.paths)
        except ConfigError as exc:
            log.warning("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.paths[0])
        return True

    def changed(self) -> bool:
        """Whether either file changed since the last load or attempt."""
        return _signature(self.paths) != self._seen

    async def watch(self, every_s: float) -> None:
        """Reload on SIGHUP, and when the files change (checked every `every_s`, 0: never);
        run it in the service's task group until cancelled. One per process (SIGHUP)."""
        loop = asyncio.get_running_loop()
        hup = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, hup.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every_s or None):
                        await hup.wait()
                if hup.is_set() or self.changed():
                    hup.clear()
                    self.reload()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
