"""services/kit/tls.py: the reloadable certificate of a public listener.

Handshakes run over memory BIOs (no sockets): a client that trusts the dev CA of cli/devca.py
against the listener's context, and we look at the certificate the client was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from cli import devca
from pushwire_protocol.errors import ConfigError
from pushwire_sdk.trust import client_context
from services.kit.tls import ServerTls, TlsConfig
from tests.integration.crowd import until


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[ssl.SSLObject, int]:
    """A completed handshake of `client` with `server` over memory BIOs: the client end and
    the serial of the certificate it was shown."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if c.version() and s.version():
            break
    der = c.getpeercert(binary_form=True)
    assert der is not None
    return c, x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def files(tmp_path: Path) -> devca.DevTls:
    return devca.ensure(tmp_path / "tls")


def serial(files: devca.DevTls) -> int:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number


def test_serves_the_configured_certificate(files: devca.DevTls) -> None:
    tls = ServerTls(files.cert, files.key)
    _, seen = handshake(tls.context, client_context(files.ca))
    assert seen == serial(files)


def test_reload_new_handshakes_see_the_new_certificate(files: devca.DevTls) -> None:
    tls = ServerTls(files.cert, files.key)
    old = serial(files)
    devca.issue(files, devca.NAMES)
    assert tls.changed()
    assert tls.reload() and tls.reloads == 1
    _, seen = handshake(tls.context, client_context(files.ca))
    assert seen == serial(files) != old
    assert not tls.changed()


def test_a_reload_that_fails_keeps_the_current_certificate(files: devca.DevTls,
                                                           tmp_path: Path) -> None:
    tls = ServerTls(files.cert, files.key)
    good = serial(files)
    other = devca.ensure(tmp_path / "other")
    files.key.write_bytes(other.key.read_bytes())       # a key that does not match
    assert not tls.reload()
    files.cert.write_text("half a PEM")
    assert not tls.reload()
    _, seen = handshake(tls.context, client_context(files.ca))
    assert seen == good and tls.reloads == 0


def test_a_client_trusting_another_ca_refuses(files: devca.DevTls, tmp_path: Path) -> None:
    tls = ServerTls(files.cert, files.key)
    stranger = devca.ensure(tmp_path / "stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls.context, client_context(stranger.ca))


async def test_watch_reloads_on_sighup(files: devca.DevTls) -> None:
    tls = ServerTls(files.cert, files.key)
    watching = asyncio.create_task(tls.watch(0))         # no polling: only the signal
    await asyncio.sleep(0)                                # the handler is installed
    devca.issue(files, devca.NAMES)
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: tls.reloads == 1)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    _, seen = handshake(tls.context, client_context(files.ca))
    assert seen == serial(files)


async def test_watch_reloads_on_file_change(files: devca.DevTls) -> None:
    tls = ServerTls(files.cert, files.key)
    watching = asyncio.create_task(tls.watch(0.05))
    devca.issue(files, devca.NAMES)
    await until(lambda: tls.reloads >= 1 and not tls.changed())
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    _, seen = handshake(tls.context, client_context(files.ca))
    assert seen == serial(files)


def test_config_wants_both_files_or_neither(files: devca.DevTls) -> None:
    TlsConfig().validate_tls()
    TlsConfig(str(files.cert), str(files.key)).validate_tls()
    assert ServerTls.of(TlsConfig()) is None
    with pytest.raises(ConfigError, match="both"):
        TlsConfig(tls_cert_file=str(files.cert)).validate_tls()
    with pytest.raises(ConfigError, match="cannot load"):
        TlsConfig(str(files.cert), str(files.cert.with_name("missing.pem"))).validate_tls()
    with pytest.raises(ConfigError, match="tls_reload_s"):
        TlsConfig(str(files.cert), str(files.key), -1).validate_tls()
