"""The gateway's TLS certificate: a configured certificate/key pair, or a self-signed one
generated into the data directory on first start (``gateway-cert.pem``, and
``gateway-key.pem`` with mode 0600), so ``sslmode=require`` works out of the box.

Clients that want to verify the server (``sslmode=verify-full``) can use the generated
certificate itself as their root certificate: it is its own CA, valid for ``localhost``,
the loopback addresses, this host's name and the configured listen address.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

_log = logging.getLogger("millpond.gateway")

CERT_FILE = "gateway-cert.pem"
KEY_FILE = "gateway-key.pem"
_VALID_FOR = timedelta(days=3650)


def server_context(
    data_dir: Path, cert: Path | None, key: Path | None, listen_host: str
) -> ssl.SSLContext:
    """The TLS context the gateway serves with."""
    if (cert is None) != (key is None):
        raise ValueError(
            "set both MILLPOND_GATEWAY_TLS_CERT and MILLPOND_GATEWAY_TLS_KEY, or neither"
        )
    if cert is None or key is None:
        cert, key = ensure_self_signed(data_dir, listen_host)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def ensure_self_signed(data_dir: Path, listen_host: str) -> tuple[Path, Path]:
    """The generated certificate and key paths, generating them if missing."""
    cert_path, key_path = data_dir / CERT_FILE, data_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    hostname = socket.gethostname()
    names = ["localhost"]
    if hostname and hostname != "localhost":
        names.append(hostname)
    addresses = {"127.0.0.1", "::1"}
    if listen_host not in ("", "0.0.0.0", "::", "localhost"):
        try:
            addresses.add(str(ipaddress.ip_address(listen_host)))
        except ValueError:
            if listen_host != hostname:
                names.append(listen_host)
    write_self_signed(cert_path, key_path, "millpond gateway", names, sorted(addresses))
    _log.info("generated a self-signed TLS certificate for the gateway: %s", cert_path)
    return cert_path, key_path


def write_self_signed(
    cert_path: Path, key_path: Path, common_name: str, names: list[str], addresses: list[str]
) -> None:
    """Write a new self-signed server certificate (its own CA) for these DNS names and IP
    addresses, and its key (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
