"""What pointing the unmodified ``bitdotio`` package at millpond takes (``millpond compat
bitio``): the package hard-codes ``https://api.bit.io`` (its HTTP API) and
``db.bit.io:5432`` (Postgres, ``sslmode=require``), so

- both names resolve to millpond on the client machines (a hosts file, or DNS);
- the HTTP API serves HTTPS on 443 with a certificate for ``api.bit.io`` the client trusts
  (``requests`` reads ``REQUESTS_CA_BUNDLE``: a bundle of the usual roots plus this one);
- the gateway listens on 5432 (with the same certificate, so ``verify-full`` works too).

:func:`prepare` makes the certificate (once) and the bundle in the data directory.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ...gateway.tls import write_self_signed

API_HOST = "api.bit.io"
DB_HOST = "db.bit.io"
HTTPS_PORT = 443
POSTGRES_PORT = 5432
CERT_FILE = "bitio-cert.pem"
KEY_FILE = "bitio-key.pem"
BUNDLE_FILE = "bitio-ca-bundle.pem"


@dataclass(frozen=True)
class BitioSetup:
    address: str
    """The IP address clients reach millpond at (and the server listens on)."""
    cert: Path
    key: Path
    bundle: Path

    @property
    def hosts_line(self) -> str:
        return f"{self.address} {API_HOST} {DB_HOST}"

    def server_env(self) -> dict[str, str]:
        return {
            "MILLPOND_HOST": self.address,
            "MILLPOND_PORT": str(HTTPS_PORT),
            "MILLPOND_TLS_CERT": str(self.cert),
            "MILLPOND_TLS_KEY": str(self.key),
            "MILLPOND_GATEWAY_HOST": self.address,
            "MILLPOND_GATEWAY_PORT": str(POSTGRES_PORT),
            "MILLPOND_GATEWAY_TLS_CERT": str(self.cert),
            "MILLPOND_GATEWAY_TLS_KEY": str(self.key),
        }

    def client_env(self) -> dict[str, str]:
        return {"REQUESTS_CA_BUNDLE": str(self.bundle)}


def check_address(address: str) -> str:
    """``address`` as a normalised IP address; ValueError if it is none."""
    return str(ipaddress.ip_address(address))


def prepare(data_dir: Path, address: str) -> BitioSetup:
    """The certificate for both hosts (made if missing) and the client's CA bundle (the
    usual roots and this certificate, rewritten every time)."""
    address = check_address(address)
    data_dir = data_dir.resolve()
    cert, key = data_dir / CERT_FILE, data_dir / KEY_FILE
    if not (cert.exists() and key.exists()):
        write_self_signed(cert, key, "millpond for bit.io clients", [API_HOST, DB_HOST], [])
    bundle = data_dir / BUNDLE_FILE
    bundle.write_bytes(_roots() + b"\n" + cert.read_bytes())
    return BitioSetup(address, cert, key, bundle)


def _roots() -> bytes:
    import certifi

    return Path(certifi.where()).read_bytes()


__all__ = ["API_HOST", "DB_HOST", "BitioSetup", "check_address", "prepare"]
