"""Framing between the server and a module worker, without I/O: each message is a JSON
object, sent as a 4-byte big-endian length and that many bytes of UTF-8 JSON.

A frame longer than :data:`MAX_FRAME` is refused on both sides: a worker cannot make the
server buffer without bound, and a reply too large to send is reported as an error."""

from __future__ import annotations

import json
import struct
from typing import Any

MAX_FRAME = 16 * 1024 * 1024
"""Largest message, in bytes of JSON."""

_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """A frame is too large or is not a JSON object: the other side is broken (or hostile)."""


def encode(message: dict[str, Any], max_frame: int = MAX_FRAME) -> bytes:
    """The frame of ``message``; :class:`FrameError` if it is larger than ``max_frame``."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > max_frame:
        raise FrameError(f"a message of {len(body)} bytes is larger than {max_frame}")
    return _HEADER.pack(len(body)) + body


class Decoder:
    """Collects bytes as they arrive; :meth:`feed` returns the messages they complete."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise FrameError(f"a frame of {length} bytes is larger than {self.max_frame}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            messages.append(_decode(body))
        return messages

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buffer)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"a frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError("a frame is not a JSON object")
    return message
