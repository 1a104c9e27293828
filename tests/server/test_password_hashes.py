"""Password hashes (server/accounts/passwords.py): scrypt with a random salt, in a
self-describing string; a wrong password, a tampered string or parameters beyond the caps
never verify."""

from __future__ import annotations

import base64
import time

import pytest

from millpond.server.accounts import passwords
from millpond.server.accounts.passwords import Params, hash_password, parse, verify

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(PASSWORD)


def test_a_hash_describes_itself_and_verifies(stored: str) -> None:
    scheme, params, salt, key = stored.split("$")
    assert (scheme, params) == ("scrypt", "n=16384,r=8,p=1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
    assert PASSWORD not in stored
    assert verify(PASSWORD, stored)


def test_wrong_passwords_fail(stored: str) -> None:
    for wrong in ("", PASSWORD.upper(), PASSWORD + " ", PASSWORD[:-1], "\ud800" + PASSWORD):
        assert not verify(wrong, stored), wrong


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second
    assert verify(PASSWORD, first) and verify(PASSWORD, second)


def _with(stored: str, index: int, part: str) -> str:
    parts = stored.split("$")
    parts[index] = part
    return "$".join(parts)


def _flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_strings_fail(stored: str) -> None:
    _, _, salt, key = stored.split("$")
    other_values = [
        _with(stored, 2, _flip(salt)),
        _with(stored, 3, _flip(key)),
        _with(stored, 1, "n=8192,r=8,p=1"),  # weaker parameters: another key
    ]
    malformed = [
        _with(stored, 0, "bcrypt"),
        _with(stored, 1, "n=16384,r=8,p=1,x=1"),
        _with(stored, 1, "n=016384,r=8,p=1"),
        _with(stored, 1, "r=8,n=16384,p=1"),
        _with(stored, 2, salt.rstrip("=")),
        _with(stored, 2, base64.b64encode(b"x" * 15).decode()),
        _with(stored, 3, key[:-2] + "B="),  # non-canonical trailing bits
        stored + "$",
        stored + "\n",
        " " + stored,
        stored.replace("$", "$$", 1),
        "",
        "scrypt",
    ]
    for text in other_values + malformed:
        assert not verify(PASSWORD, text), text
    for text in malformed:
        assert parse(text) is None, text


@pytest.mark.parametrize(
    "params",
    [
        "n=16385,r=8,p=1",  # not a power of two
        "n=1,r=8,p=1",
        "n=65536,r=8,p=1",  # 64 MiB: over the cap
        "n=16384,r=32,p=1",
        "n=16384,r=8,p=3",  # too much work
        "n=1073741824,r=8,p=1",
        "n=16384,r=0,p=1",
        "n=16384,r=8,p=0",
        "n=99999999999,r=8,p=1",
    ],
)
def test_parameters_beyond_the_caps_are_refused_at_once(stored: str, params: str) -> None:
    text = _with(stored, 1, params)
    started = time.monotonic()
    assert parse(text) is None
    assert not verify(PASSWORD, text)
    assert time.monotonic() - started < 0.01  # refused before any derivation


def test_parameters_within_the_caps_are_accepted() -> None:
    for params in (Params(1024, 8, 1), Params(32768, 8, 1), Params(16384, 8, 2)):
        text = hash_password(PASSWORD, params)
        assert parse(text) is not None and verify(PASSWORD, text)
    assert not Params(2**16, 8, 1).allowed()


def test_the_default_costs_tens_of_milliseconds() -> None:
    started = time.monotonic()
    hash_password(PASSWORD)
    took = time.monotonic() - started
    assert 0.005 < took < 2, took  # ~40 ms on one core; generous for loaded machines
    assert 128 * passwords.R * passwords.N <= passwords.MAX_MEMORY < 64 * 1024 * 1024


def test_the_dummy_hash_matches_no_guess() -> None:
    dummy = passwords.dummy_hash()
    assert dummy == passwords.dummy_hash() and parse(dummy) is not None
    assert not verify("", dummy) and not verify(PASSWORD, dummy)
