"""A private CA and the certificates signed by it, for TLS on the local topology and in
tests: a server certificate for Redis and Sentinel, a client one for mutual TLS.

Keys are written with mode 0600; nothing here is meant to leave the machine.
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

LOCAL_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CertificatePair:
    """A certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Authority:
    """A CA that can sign certificates; `ca_file` is what clients trust."""

    ca_file: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str = "sessionlib local CA") -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        ca_file = directory / "ca.crt"
        _write(ca_file, certificate.public_bytes(serialization.Encoding.PEM), secret=False)
        _write(directory / "ca.key", _key_pem(key), secret=True)
        return cls(ca_file=ca_file, key=key, certificate=certificate)

    def issue(
        self,
        directory: Path,
        name: str,
        *,
        hostnames: tuple[str, ...] = LOCAL_NAMES,
        client: bool | None = False,
        valid_days: float = 825,
        valid_from_days_ago: float = 0,
    ) -> CertificatePair:
        """A certificate for `hostnames` (a server's, with `client` a client's, with `client`
        None both: a Redis node presents one to its clients and to the master it replicates
        from under mutual TLS), valid from `valid_from_days_ago` for `valid_days` (negative
        spans make expired ones)."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        start = _now() - datetime.timedelta(days=valid_from_days_ago, minutes=5)
        usages = {
            True: [ExtendedKeyUsageOID.CLIENT_AUTH],
            False: [ExtendedKeyUsageOID.SERVER_AUTH],
            None: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        }[client]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=valid_days))
            .add_extension(x509.SubjectAlternativeName(_alt_names(hostnames)), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        pair = CertificatePair(directory / f"{name}.crt", directory / f"{name}.key")
        _write(pair.cert_file, certificate.public_bytes(serialization.Encoding.PEM), secret=False)
        _write(pair.key_file, _key_pem(key), secret=True)
        return pair


def _alt_names(hostnames: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    # Created with its final mode, so a key is never readable by others, not even briefly.
    mode = 0o600 if secret else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, mode)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
