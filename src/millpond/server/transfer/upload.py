"""A ``multipart/form-data`` request body streamed to disk as it arrives: the ``file``
part goes straight into a file (never whole in memory, capped in size), the other parts
are small form fields. No framework here: it reads any async iterator of bytes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import ServiceError, invalid

MAX_FIELD_BYTES = 1024 * 1024
MAX_FIELDS = 64


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file_name: str | None = None
    path: Path | None = None
    size: int = 0


class _State:
    def __init__(self) -> None:
        self.headers: dict[str, bytes] = {}
        self.field = b""
        self.value = b""
        self.name = ""
        self.data = bytearray()
        self.is_file = False
        self.out: IO[bytes] | None = None


def boundary_of(content_type: str) -> bytes | None:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    return params.get(b"boundary")


def too_large(limit: int) -> ServiceError:
    return ServiceError(
        413,
        "file_too_large",
        f"the file is larger than {limit} bytes (MILLPOND_TRANSFER_MAX_FILE_BYTES)",
        {"limit": limit},
    )


async def receive(
    body: AsyncIterator[bytes],
    content_type: str,
    dest: Path,
    *,
    max_bytes: int,
    before_file: Callable[[dict[str, str]], Awaitable[None]] | None = None,
) -> Upload:
    """Parse the body; the part named ``file`` is written to ``dest``. ``before_file``
    sees the fields sent before the file (so a refused request stops before the upload);
    it may raise to refuse."""
    boundary = boundary_of(content_type)
    if not boundary:
        raise invalid("validation_error", "expected a multipart/form-data body with a boundary")
    up = Upload()
    st = _State()
    errors: list[ServiceError] = []
    pending_hook: list[bool] = []

    def fail(err: ServiceError) -> None:
        if not errors:
            errors.append(err)

    def on_part_begin() -> None:
        st.headers, st.data, st.name, st.is_file = {}, bytearray(), "", False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        st.field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        st.value += data[start:end]

    def on_header_end() -> None:
        st.headers[st.field.decode("latin-1").lower()] = st.value
        st.field, st.value = b"", b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(st.headers.get("content-disposition", b""))
        st.name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params or st.name == "file":
            if st.name != "file":
                fail(invalid("validation_error", f"unexpected file part {st.name!r}: send 'file'"))
                return
            if up.path is not None:
                fail(invalid("validation_error", "send one file per import"))
                return
            filename = params.get(b"filename", b"").decode("utf-8", "replace")
            up.file_name = os.path.basename(filename.replace("\\", "/")) or None
            up.path = dest
            st.out = dest.open("wb")
            st.is_file = True
            pending_hook.append(True)
        elif len(up.fields) >= MAX_FIELDS:
            fail(invalid("validation_error", "too many form fields"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if errors:
            return
        if st.is_file and st.out is not None:
            up.size += end - start
            if up.size > max_bytes:
                fail(too_large(max_bytes))
                return
            st.out.write(data[start:end])
            return
        st.data += data[start:end]
        if len(st.data) > MAX_FIELD_BYTES:
            fail(invalid("validation_error", f"form field {st.name!r} is too long"))

    def on_part_end() -> None:
        if st.is_file:
            return
        if st.name:
            try:
                up.fields[st.name] = st.data.decode("utf-8")
            except UnicodeDecodeError:
                fail(invalid("validation_error", f"form field {st.name!r} is not UTF-8 text"))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in body:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise invalid("validation_error", f"malformed multipart body: {exc}") from exc
            if errors:
                raise errors[0]
            if pending_hook:
                pending_hook.clear()
                if before_file is not None:
                    await before_file(dict(up.fields))
        parser.finalize()
        if errors:
            raise errors[0]
        if st.out is not None:
            st.out.flush()
            os.fsync(st.out.fileno())  # acknowledged means on disk
    except BaseException:
        if st.out is not None:
            st.out.close()
        dest.unlink(missing_ok=True)
        raise
    if st.out is not None:
        st.out.close()
    return up
