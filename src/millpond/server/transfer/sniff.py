"""Sniffing a delimited text file: encoding, dialect, header, sample rows.

As DuckDB's CSV sniffer does, the sample comes from several places in the file — the
head and evenly spaced chunks after it (each starting at a line start) — so a column
whose values change shape half-way down is seen. Everything here works on bytes and
strings already read; :func:`read_samples` is the only function that opens the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import infer
from .errors import JobError

HEAD_BYTES = 256 * 1024
CHUNK_BYTES = 64 * 1024
CHUNKS = 8
MAX_SAMPLE_ROWS = 2000
DELIMITERS = (",", "\t", ";", "|")

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

POSTGRES_ENCODINGS = {
    "utf-8": "UTF8",
    "cp1252": "WIN1252",
    "latin-1": "LATIN1",
    "iso8859-15": "LATIN9",
    "cp1251": "WIN1251",
    "cp1250": "WIN1250",
    "koi8-r": "KOI8R",
    "shift_jis": "SJIS",
    "euc_jp": "EUC_JP",
    "gbk": "GBK",
    "big5": "BIG5",
}
"""Python codec names (as :func:`codecs.lookup` spells them) Postgres can read itself."""


@dataclass
class Samples:
    head: bytes
    """The first bytes of the file (after any BOM), ending at a line end unless the file
    is shorter."""
    chunks: list[bytes]
    """Later pieces of the file, each starting at a line start and ending at a line end."""
    bom: int
    """Length of the byte-order mark at the start (0 without one)."""
    bom_encoding: str | None
    complete: bool
    """``head`` is the whole file."""


def _line_end(data: bytes, start: int = 0) -> int:
    """Index just past the last line end in ``data`` at or after ``start`` (0: none)."""
    cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
    return cut + 1 if cut >= start else 0


def read_samples(path: Path, max_line: int) -> Samples:
    """Read the head and evenly spaced chunks of the file. ``max_line``: a head with no
    line end within this many bytes is a line too long (``value_too_large``)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
        bom, bom_encoding = 0, None
        for mark, name in _BOMS:
            if head.startswith(mark):
                bom, bom_encoding = len(mark), name
                break
        head = head[bom:]
        complete = bom + len(head) >= size
        while not complete and _line_end(head) == 0:
            if len(head) > max_line:
                raise JobError(
                    "value_too_large",
                    f"the first line is longer than {max_line} bytes (the largest line or value"
                    " an import takes; MILLPOND_TRANSFER_MAX_VALUE_BYTES)",
                    {"line": 1, "limit": max_line},
                )
            more = f.read(HEAD_BYTES)
            head += more
            complete = not more or bom + len(head) >= size
        if not complete:
            head = head[: _line_end(head)]
        chunks: list[bytes] = []
        start = bom + len(head)
        if not complete and size - start > CHUNK_BYTES * 2:
            step = (size - start) // CHUNKS
            for i in range(1, CHUNKS + 1):
                offset = min(start + i * step, size - CHUNK_BYTES)
                f.seek(max(offset, start))
                data = f.read(CHUNK_BYTES)
                first = data.find(b"\n")
                if first < 0:
                    continue
                body = data[first + 1 :]
                body = body[: _line_end(body)]
                if body:
                    chunks.append(body)
    return Samples(head, chunks, bom, bom_encoding, complete)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(data, final=False)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def detect_encoding(samples: Samples) -> str:
    """The encoding of the sampled text: the BOM's, else UTF-8 if every sample decodes
    as UTF-8, else Windows-1252 if it decodes, else Latin-1 (which decodes anything)."""
    if samples.bom_encoding:
        return samples.bom_encoding
    pieces = [samples.head, *samples.chunks]
    for candidate in ("utf-8", "cp1252"):
        if all(_decodes(p, candidate) for p in pieces):
            return candidate
    return "latin-1"


def codec_name(encoding: str) -> str:
    """The canonical Python codec name of ``encoding``; ``LookupError`` if unknown."""
    name = codecs.lookup(encoding).name
    return {"iso8859-1": "latin-1", "mbcs": "cp1252"}.get(name, name)


def decode(data: bytes, encoding: str, where: str = "the file") -> str:
    """Decode a sample (its last character may be cut in two: that part is dropped)."""
    try:
        return codecs.getincrementaldecoder(encoding)().decode(data, final=False)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise JobError(
            "encoding_error",
            f"{where} is not valid {encoding} (byte 0x{data[exc.start]:02x} near line {line});"
            " give the right encoding",
            {"line": line, "encoding": encoding},
        ) from exc


@dataclass
class Dialect:
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    """``"`` when quotes are doubled inside quoted values, ``\\`` when escaped."""
    line_terminator: str = "\n"
    strict: bool = True
    """Quotes appear only around whole values and line ends are uniform — Postgres's own
    CSV reader can read the file as is (the fast path). Otherwise rows are read by
    Python's more lenient CSV reader."""

    def reader_options(self) -> dict[str, Any]:
        if self.escape == self.quote:
            return {"delimiter": self.delimiter, "quotechar": self.quote, "doublequote": True}
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quote,
            "doublequote": False,
            "escapechar": self.escape,
        }


def parse(text: str, dialect: Dialect, limit: int = MAX_SAMPLE_ROWS) -> list[list[str]]:
    """At most ``limit`` rows of ``text`` (blank lines skipped)."""
    rows: list[list[str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), **dialect.reader_options())
    try:
        for row in reader:
            if row:
                rows.append(row)
                if len(rows) >= limit:
                    break
    except csv.Error:
        pass  # a sample may end inside a quoted value; the rows so far are enough
    return rows


def _consistency(rows: Sequence[Sequence[str]]) -> tuple[float, int]:
    counts = Counter(len(r) for r in rows)
    if not counts:
        return 0.0, 0
    width, n = counts.most_common(1)[0]
    return n / len(rows), width


def sniff_dialect(text: str, delimiter: str | None = None, quote: str | None = None) -> Dialect:
    """The delimiter (the candidate giving the most consistent rows of more than one
    column), quoting and escaping of a sample of delimited text."""
    quote = quote or '"'
    lines = text[: 64 * 1024]
    escape = quote
    if f"\\{quote}" in lines and f"{quote}{quote}" not in lines.replace(f"\\{quote}", ""):
        escape = "\\"
    if delimiter is None:
        best: tuple[bool, float, int] = (False, 0.0, 0)
        delimiter = ","
        for candidate in DELIMITERS:
            if candidate not in lines:
                continue
            rows = parse(lines, Dialect(candidate, quote, escape), limit=200)
            share, width = _consistency(rows)
            score = (width > 1 and share >= 0.9, share if width > 1 else 0.0, width)
            if score > best:
                best, delimiter = score, candidate
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    terminator = "\r\n" if crlf >= lf and crlf >= cr and crlf else ("\r" if cr > lf else "\n")
    mixed = sum(1 for n in (crlf, lf, cr) if n) > 1
    dialect = Dialect(delimiter, quote, escape, terminator)
    dialect.strict = not mixed and _quotes_are_strict(text, dialect)
    return dialect


def _quotes_are_strict(text: str, dialect: Dialect) -> bool:
    """Whether every value is either quoted whole or holds no quote character (Postgres
    starts a quoted section at any quote, Python only at a value's start)."""
    d, q = re.escape(dialect.delimiter), re.escape(dialect.quote)
    if dialect.escape == dialect.quote:
        quoted = f"{q}(?:[^{q}]|{q}{q})*{q}"
    else:
        e = re.escape(dialect.escape)
        quoted = f"{q}(?:[^{q}{e}]|{e}.)*{q}"
    field_re = re.compile(f"(?:{quoted}|[^{d}{q}\\r\\n]*)(?:{d}|\\r\\n|\\n|\\r|\\Z)", re.S)
    pos, end = 0, len(text)
    while pos < end:
        m = field_re.match(text, pos)
        if m is None or m.end() == pos:
            return False
        pos = m.end()
    return True


# -- the header ----------------------------------------------------------------------------

HeaderMode = str  # "auto" | "first_row" | "no_header"


def decide_header(
    rows: Sequence[Sequence[Any]],
    mode: HeaderMode,
    classify: Callable[[Any], str | None] = infer.classify_value,
) -> bool:
    """Whether the first row is a header.

    ``auto``: the first row is a header when, in some column whose other values have a
    type other than text, its value is missing or could only be text (``"price"`` above
    numbers).
    When every column is text it is a header if its values are all present and distinct
    (most files have one); when it fits the types of the data, it is data.
    """
    if mode == "first_row":
        return True
    if mode == "no_header" or not rows:
        return False
    first = rows[0]
    if len(rows) == 1:
        return all(classify(v) == infer.TEXT for v in first)
    typed = False
    for j, value in enumerate(first):
        kind = infer.infer_column((r[j] for r in rows[1:] if j < len(r)), classify)
        if kind == infer.TEXT:
            continue
        typed = True
        own = classify(value)
        if own is None or infer.join(kind, own) == infer.TEXT:
            return True
    if typed:
        return False
    present = [v for v in first if v is not None and str(v).strip()]
    return len(present) == len(first) and len(set(map(str, first))) == len(first)


@dataclass
class CsvSniff:
    encoding: str
    bom: int
    dialect: Dialect
    header: bool
    header_row: list[str]
    sample: list[list[str]]
    """Data rows from the head (for previews)."""
    data_rows: list[list[str]] = field(default_factory=list)
    """Data rows from the head and the later chunks (for types)."""
    width: int = 0


def sniff_csv(
    path: Path,
    *,
    header_mode: HeaderMode,
    max_line: int,
    encoding: str | None = None,
    delimiter: str | None = None,
    quote: str | None = None,
) -> CsvSniff:
    samples = read_samples(path, max_line)
    enc = codec_name(encoding) if encoding else detect_encoding(samples)
    head = decode(samples.head, enc)
    if not head.strip():
        raise JobError("empty_file", "the file is empty: there are no rows to import")
    dialect = sniff_dialect(head, delimiter, quote)
    rows = parse(head, dialect)
    if not rows:
        raise JobError("empty_file", "the file has no rows to import")
    _, width = _consistency(rows[: MAX_SAMPLE_ROWS // 2])
    header = decide_header(rows, header_mode, infer.classify_text)
    width = len(rows[0]) if header else width
    data = [r for r in rows[1 if header else 0 :] if len(r) == width]
    sample = list(data[:20])
    for chunk in samples.chunks:
        try:
            text = decode(chunk, enc)
        except JobError:
            continue  # a later chunk that does not decode: the load reports where
        data += [r for r in parse(text, dialect, limit=MAX_SAMPLE_ROWS // 4) if len(r) == width]
    return CsvSniff(
        encoding=enc,
        bom=samples.bom,
        dialect=dialect,
        header=header,
        header_row=list(rows[0]) if header else [],
        sample=sample,
        data_rows=data,
        width=width,
    )
