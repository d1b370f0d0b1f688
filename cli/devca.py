"""The dev certificate authority of `pushwire dev --tls`: a local CA and a server certificate.

    files = devca.ensure(home / "tls")    # makes what is missing, keeps what exists
    files.ca, files.cert, files.key       # PEM files: trust the first, serve the other two

The CA (`ca.pem`, its key `ca-key.pem` owner-only) is made once and kept, so a client that
trusts it keeps trusting the cluster across restarts; the server certificate names localhost,
127.0.0.1 and ::1 and is made again when missing or within a week of expiry. Only for a
machine's own development: nothing else should trust this CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 90
RENEW_BEFORE = datetime.timedelta(days=7)
NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevTls:
    ca: Path          # the CA certificate clients trust
    cert: Path        # the server certificate (chain: itself; clients hold the CA)
    key: Path         # its private key


def ensure(folder: Path) -> DevTls:
    """The dev CA and server certificate in `folder`, made where missing or expiring."""
    folder.mkdir(parents=True, exist_ok=True)
    files = DevTls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    ca_key_file = folder / "ca-key.pem"
    if not files.ca.exists() or not ca_key_file.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        _write(ca_key_file, _pem_key(ca_key), private=True)
        _write(files.ca, _ca_certificate(ca_key).public_bytes(serialization.Encoding.PEM))
        files.cert.unlink(missing_ok=True)
    if _expiring(files.cert):
        issue(files, NAMES)
    return files


def issue(files: DevTls, names: tuple[str, ...]) -> x509.Certificate:
    """A new server certificate for `names` (DNS names or IP addresses), signed by the CA in
    the folder of `files.ca`, written to `files.cert` and `files.key` (each replaced at once)."""
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(
        (files.ca.parent / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name("pushwire dev server"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(files.key, _pem_key(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return cert


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = _name(f"pushwire dev CA {os.uname().nodename}")
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))


def _expiring(cert_file: Path) -> bool:
    if not cert_file.exists():
        return True
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write to a temporary file and rename it into place: a reader (a service reloading its
    certificate) sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
