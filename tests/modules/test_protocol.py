"""The framing between the server and a module worker (sans I/O)."""

from __future__ import annotations

import struct

import pytest

from millpond.server.modules.protocol import Decoder, FrameError, encode


def test_a_message_round_trips() -> None:
    message = {"op": "call", "id": 7, "args": ["héllo", 1.5, None, [True]]}
    assert Decoder().feed(encode(message)) == [message]


def test_frames_split_anywhere_and_joined_decode_in_order() -> None:
    messages = [{"n": n, "text": "x" * n} for n in range(20)]
    stream = b"".join(encode(m) for m in messages)
    decoder = Decoder()
    received = []
    for i in range(0, len(stream), 7):
        received += decoder.feed(stream[i : i + 7])
    assert received == messages
    assert decoder.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = encode({"a": 1})
    decoder = Decoder()
    assert decoder.feed(frame[:3]) == []
    assert decoder.feed(frame[3:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [{"a": 1}]


def test_the_length_is_big_endian_utf8_bytes() -> None:
    frame = encode({"t": "é"})
    (length,) = struct.unpack(">I", frame[:4])
    assert frame[4:] == '{"t":"é"}'.encode()
    assert length == len(frame) - 4


def test_a_frame_too_large_is_refused_from_its_header() -> None:
    decoder = Decoder(max_frame=100)
    with pytest.raises(FrameError, match="larger than 100"):
        decoder.feed(struct.pack(">I", 101))


def test_encoding_a_message_too_large_fails() -> None:
    with pytest.raises(FrameError):
        encode({"x": "y" * 100}, max_frame=50)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_a_frame_that_is_not_a_json_object_is_an_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        Decoder().feed(struct.pack(">I", len(body)) + body)
