"""The gateway's sans-I/O protocol module: first packets, messages, and the client side
of SCRAM-SHA-256 against RFC 7677's test vector."""

from __future__ import annotations

import hashlib

import pytest

from millpond.server.gateway import protocol as pq


def test_scram_sha_256_rfc7677_vector() -> None:
    client = pq.ScramClient("pencil", user="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert client.client_final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(pq.ScramError, match="not the real server"):
        client.verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


def test_scram_rejects_a_nonce_that_is_not_ours() -> None:
    client = pq.ScramClient("pencil", nonce="abc")
    with pytest.raises(pq.ScramError, match="nonce"):
        client.client_final(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(pq.ScramError, match="nonce"):
        client.client_final(b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_md5_password() -> None:
    # Postgres stores "md5" + md5(password + user): for postgres/postgres that is
    # md53175bce1d3201d16594cebf9d7eb3f9d; the response salts that hex digest
    salt = b"\x01\x02\x03\x04"
    expected = hashlib.md5(b"3175bce1d3201d16594cebf9d7eb3f9d" + salt).hexdigest()
    assert pq.md5_password("postgres", "postgres", salt) == "md5" + expected


def test_first_packets_round_trip() -> None:
    body = pq.startup_message({"user": "u", "database": "a/b", "application_name": ""})[4:]
    packet = pq.parse_first_packet(body)
    assert packet == pq.StartupMessage(
        3, 0, {"user": "u", "database": "a/b", "application_name": ""}
    )
    assert pq.parse_first_packet(pq.ssl_request()[4:]) == pq.SSLRequest()
    assert pq.parse_first_packet(pq.cancel_request(7, 2**32 - 1)[4:]) == pq.CancelRequest(
        7, 2**32 - 1
    )
    with pytest.raises(pq.ProtocolViolation, match=r"unsupported frontend protocol 2\.0"):
        pq.parse_first_packet((2 << 16).to_bytes(4, "big") + b"\x00")
    with pytest.raises(pq.ProtocolViolation, match="terminator"):
        pq.parse_first_packet(pq.PROTOCOL_3_0.to_bytes(4, "big") + b"user\x00u")
    with pytest.raises(pq.ProtocolViolation):
        pq.packet_length((pq.MAX_STARTUP_PACKET + 5).to_bytes(4, "big"))


def test_error_response_fields() -> None:
    message = pq.error_response("28P01", "API key revoked", hint="make a new key")
    kind, length = pq.message_length(message[:5])
    assert kind == b"E" and length == len(message) - 5
    assert pq.parse_error_fields(message[5:]) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28P01",
        "M": "API key revoked",
        "H": "make a new key",
    }
