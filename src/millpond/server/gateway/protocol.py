"""The parts of the PostgreSQL frontend/backend protocol (v3) the gateway speaks itself,
as plain functions over bytes — no I/O.

The gateway parses only the startup phase: the untyped first packets (SSLRequest,
GSSENCRequest, CancelRequest, StartupMessage), the password and SASL exchanges on both
sides, and the backend's messages up to the first ReadyForQuery. After that it relays
bytes without looking at them (see ``relay.py``).

Also here: the client side of SCRAM-SHA-256 (RFC 5802 / RFC 7677), which the gateway
uses to log in to Postgres as a database role, and MD5 password hashing for external
clusters that still use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass, field
from functools import lru_cache

# -- codes ---------------------------------------------------------------------------------

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_STARTUP_PACKET = 10_000  # Postgres' own limit
MAX_MESSAGE = 1 << 20  # during the startup phase only: passwords, SASL, parameters

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

SCRAM_SHA_256 = "SCRAM-SHA-256"

_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_HEADER = struct.Struct("!cI")


class ProtocolViolation(Exception):
    """The peer sent something the protocol does not allow at this point."""


# -- first packets (client → gateway) ----------------------------------------------------------


@dataclass(frozen=True)
class SSLRequest:
    pass


@dataclass(frozen=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True)
class CancelRequest:
    pid: int
    secret: int


@dataclass(frozen=True)
class StartupMessage:
    major: int
    minor: int
    params: dict[str, str] = field(default_factory=dict)

    @property
    def unsupported_options(self) -> list[str]:
        """Protocol options (``_pq_.*``) the gateway does not know: all of them."""
        return [k for k in self.params if k.startswith("_pq_.")]


FirstPacket = SSLRequest | GSSENCRequest | CancelRequest | StartupMessage


def parse_first_packet(body: bytes) -> FirstPacket:
    """Parse an untyped packet's body (its length word already removed)."""
    if len(body) < 4:
        raise ProtocolViolation("invalid length of startup packet")
    (code,) = _UINT32.unpack_from(body)
    if code == SSL_REQUEST_CODE and len(body) == 4:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and len(body) == 4:
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        if len(body) != 12:
            raise ProtocolViolation("invalid length of cancel request")
        pid, secret = struct.unpack_from("!II", body, 4)
        return CancelRequest(pid, secret)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0"
        )
    params: dict[str, str] = {}
    parts = body[4:].split(b"\x00")
    # name\0value\0 ... \0 — so the split ends with two empty strings
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"" or len(parts) % 2 != 0:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    try:
        for i in range(0, len(parts) - 2, 2):
            params[parts[i].decode()] = parts[i + 1].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("startup packet is not valid UTF-8") from exc
    return StartupMessage(major, minor, params)


def packet_length(header: bytes) -> int:
    """The body length of an untyped packet from its 4-byte length word."""
    length = int(_UINT32.unpack(header)[0])
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise ProtocolViolation("invalid length of startup packet")
    return length - 4


def message_length(header: bytes) -> tuple[bytes, int]:
    """A typed message's type byte and payload length from its 5-byte header."""
    kind, length = _HEADER.unpack(header)
    length = int(length)
    if length < 4 or length - 4 > MAX_MESSAGE:
        raise ProtocolViolation(f"invalid message length {length}")
    return kind, length - 4


# -- building messages -----------------------------------------------------------------------


def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + _UINT32.pack(len(payload) + 4) + payload


def _cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def error_response(
    sqlstate: str,
    text: str,
    severity: str = "FATAL",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    fields = [
        b"S" + _cstr(severity),
        b"V" + _cstr(severity),
        b"C" + _cstr(sqlstate),
        b"M" + _cstr(text),
    ]
    if detail:
        fields.append(b"D" + _cstr(detail))
    if hint:
        fields.append(b"H" + _cstr(hint))
    return message(b"E", b"".join(fields) + b"\x00")


def auth_request(code: int, data: bytes = b"") -> bytes:
    return message(b"R", _INT32.pack(code) + data)


def auth_sasl(mechanisms: list[str]) -> bytes:
    return auth_request(AUTH_SASL, b"".join(_cstr(m) for m in mechanisms) + b"\x00")


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!II", pid, secret))


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def negotiate_protocol_version(newest_minor: int, unsupported: list[str]) -> bytes:
    payload = _INT32.pack(newest_minor) + _INT32.pack(len(unsupported))
    return message(b"v", payload + b"".join(_cstr(o) for o in unsupported))


def startup_message(params: dict[str, str]) -> bytes:
    body = _UINT32.pack(PROTOCOL_3_0)
    body += b"".join(_cstr(k) + _cstr(v) for k, v in params.items()) + b"\x00"
    return _UINT32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, pid, secret)


def password_message(password: str) -> bytes:
    return message(b"p", _cstr(password))


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", _cstr(mechanism) + _INT32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(b"p", data)


TERMINATE = message(b"X")


# -- parsing messages ----------------------------------------------------------------------------


def parse_password(payload: bytes) -> str:
    """A PasswordMessage's password (cleartext)."""
    if not payload.endswith(b"\x00") or b"\x00" in payload[:-1]:
        raise ProtocolViolation("invalid password packet")
    try:
        return payload[:-1].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("password is not valid UTF-8") from exc


def parse_error_fields(payload: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse or NoticeResponse, by their one-letter codes."""
    fields: dict[str, str] = {}
    for part in payload.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def parse_auth(payload: bytes) -> tuple[int, bytes]:
    """An Authentication* message's code and the data after it."""
    if len(payload) < 4:
        raise ProtocolViolation("invalid authentication request")
    (code,) = _INT32.unpack_from(payload)
    return code, payload[4:]


def parse_sasl_mechanisms(data: bytes) -> list[str]:
    return [m.decode() for m in data.split(b"\x00") if m]


def parse_backend_key_data(payload: bytes) -> tuple[int, int]:
    if len(payload) != 8:
        raise ProtocolViolation("invalid BackendKeyData")
    pid, secret = struct.unpack("!II", payload)
    return int(pid), int(secret)


# -- MD5 and SCRAM-SHA-256 (client side) ----------------------------------------------------------


def md5_password(user: str, password: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@lru_cache(maxsize=1024)
def _client_and_server_keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """PBKDF2 is the slow part of a login (4096 rounds); a role's salt stays the same until
    its password changes, so the keys are cached per (password, salt, iterations)."""
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


class ScramError(Exception):
    pass


class ScramClient:
    """SCRAM-SHA-256 without channel binding, as libpq does it over a plain connection.

    ``password`` is used as is: the role passwords millpond derives are ASCII, for which
    SASLprep changes nothing."""

    def __init__(self, password: str, user: str = "", nonce: str | None = None) -> None:
        self._password = password.encode()
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = f"n={user},r={self._nonce}"
        self._server_signature: bytes | None = None

    def client_first(self) -> bytes:
        return ("n,," + self._first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ScramError("invalid SCRAM nonce from the server")
        if salt is None or not iterations.isdigit() or int(iterations) < 1:
            raise ScramError("invalid SCRAM server-first message")
        client_key, server_key = _client_and_server_keys(
            self._password, base64.b64decode(salt), int(iterations)
        )
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(server_key, auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        text = server_final.decode()
        if text.startswith("e="):
            raise ScramError(f"SCRAM authentication failed: {text[2:]}")
        if not text.startswith("v=") or self._server_signature is None:
            raise ScramError("invalid SCRAM server-final message")
        if not hmac.compare_digest(base64.b64decode(text[2:]), self._server_signature):
            raise ScramError("the server's SCRAM signature does not match: not the real server")
