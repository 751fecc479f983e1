"""The instance's own certificate authority and the server certificate of the broker and web.

`python -m console tls` makes them in <instance>/tls/: a CA that lives ten years (devices
and staff browsers trust it once) and a server certificate it signs for the names and
addresses devices and browsers use, renewed by running the command again (the CA stays, so
no device needs a new file). Private keys are written 0600 and never printed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_DIR = "tls"
CA_LIFETIME = timedelta(days=3650)
# Apple devices refuse server certificates valid longer than 825 days, even from a private CA.
SERVER_LIFETIME = timedelta(days=825)
CLOCK_SKEW = timedelta(hours=1)  # valid from a little before now: a device clock may lag
ORGANISATION = "Tieng loa an ninh"


class TlsError(ValueError):
    """Certificates that cannot be made as asked."""


@dataclass(frozen=True)
class TlsFiles:
    """Where one instance keeps its CA and server certificate."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"


@dataclass(frozen=True)
class Issued:
    """What the command tells the installer (no secret in it)."""

    names: list[str]
    not_after: datetime
    ca_fingerprint: str  # sha256, as browsers and `openssl x509 -fingerprint` show it
    ca_created: bool


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only, replacing any file atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    """ECDSA P-256: small and fast on a Raspberry Pi; every browser and Mosquitto take it."""
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a server only signs its TLS handshakes (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def subject_names(names: Iterable[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses for the certificate's subjectAltName (what clients check)."""
    out: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        if not name:
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        labels = name.split(".")
        if len(name) > 253 or not all(
            0 < len(label) <= 63
            and label.replace("-", "").isalnum()
            and label.isascii()
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        ):
            raise TlsError(f"not a host name or IP address: {raw!r}")
        out.append(x509.DNSName(name))
    unique = list(dict.fromkeys(out))
    if not unique:
        raise TlsError("a certificate needs at least one host name or IP address")
    return unique


def fingerprint(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ensure_ca(files: TlsFiles, now: datetime | None = None) -> tuple[x509.Certificate, bool]:
    """The instance's CA, made on first use; returns it and whether it was made now."""
    if files.ca_cert.exists() and files.ca_key.exists():
        return x509.load_pem_x509_certificate(files.ca_cert.read_bytes()), False
    if files.ca_cert.exists() or files.ca_key.exists():
        raise TlsError(
            f"{files.directory} holds half a CA (ca.crt or ca.key is missing): restore the "
            "missing file from a backup, or move both away to make a new CA (then every "
            "device needs a new config file)"
        )
    files.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(files.directory, 0o700)
    now = now or datetime.now(UTC)
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANISATION} CA {now:%Y-%m-%d}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _pem_key(key))
    _write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return cert, True


def issue_server_certificate(
    files: TlsFiles, names: Sequence[str], now: datetime | None = None
) -> Issued:
    """A new key and certificate for the broker and the web, signed by the instance's CA."""
    alt_names = subject_names(names)
    ca_cert, created = ensure_ca(files, now)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{files.ca_key} is not the elliptic-curve key this command makes")
    now = now or datetime.now(UTC)
    key = _new_key()
    first = alt_names[0].value
    not_after = min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, str(first)),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _pem_key(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return Issued(
        names=[str(n.value) for n in alt_names],
        not_after=not_after,
        ca_fingerprint=fingerprint(ca_cert),
        ca_created=created,
    )


def certificate_names(path: Path) -> list[str]:
    """The host names and addresses a certificate file is valid for."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in ext.value]
