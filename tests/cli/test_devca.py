"""cli/devca.py: the dev CA and server certificate of `pushwire dev --tls`."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

from cli import devca


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_makes_a_ca_and_a_server_certificate_it_signed(tmp_path: Path) -> None:
    files = devca.ensure(tmp_path / "tls")
    ca, cert = load(files.ca), load(files.cert)
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca-key.pem").stat().st_mode) == 0o600


def test_the_ca_and_a_valid_certificate_are_kept(tmp_path: Path) -> None:
    first = devca.ensure(tmp_path / "tls")
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()
    again = devca.ensure(tmp_path / "tls")
    assert again.ca.read_bytes() == ca and again.cert.read_bytes() == cert


def test_a_missing_certificate_is_issued_again_by_the_same_ca(tmp_path: Path) -> None:
    files = devca.ensure(tmp_path / "tls")
    old = load(files.cert).serial_number
    files.cert.unlink()
    devca.ensure(tmp_path / "tls")
    assert load(files.cert).serial_number != old
    load(files.cert).verify_directly_issued_by(load(files.ca))
