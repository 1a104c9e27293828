"""The server's log output (``millpond up``): one handler on stderr for every logger —
millpond's, uvicorn's, the access log (``millpond.access``), Python warnings — writing
text lines (``log_format = text``, the default) or one JSON object per line
(``log_format = json``): ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``request_id`` when the line was logged while serving an HTTP request, ``exception``
when there is one.

Either way, secrets are redacted from every line (:func:`redact`): API keys, identity
tokens and console sessions (``mp_…``, ``v2_…``, ``mpt_…``, ``mps_…``), JWTs, the values
of ``token``/``key``/``secret``/``password``/``signature``-like parameters (uvicorn logs
a WebSocket's path with its query string, which may carry ``?access_token=``), URL
passwords and ``Bearer``/``Basic`` credentials.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from .context import current_request_id

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

# API keys (and bit.io's spelling), identity tokens, console sessions; never a database's
# name (mp_db_…)
_KEY = re.compile(r"(?<![A-Za-z0-9_])(mp|v2|mpt|mps)_(?!db_)[A-Za-z0-9_.-]{16,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")  # OIDC tokens
_PARAM = re.compile(r"(?<![\w.-])([\w.-]+=)('(?:[^'\\]|\\.)*'|[^&\s\"',;)#]+)")
_SECRET_NAME = re.compile(r"(?i)token|key|secret|passw|pwd|signature|jwt|credential|auth")
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")


def _param(match: re.Match[str]) -> str:
    """A ``name=value`` whose name says it holds a secret (``access_token=``, ``key=``,
    ``password=``, ``signature=``…) loses its value."""
    name = match.group(1)
    return name + REDACTED if _SECRET_NAME.search(name) else match.group(0)


def redact(text: str) -> str:
    """``text`` with every secret it may hold replaced by ``[redacted]`` (each pattern
    only tried when a character it needs is there: this runs on every log line)."""
    if "=" in text:
        text = _PARAM.sub(_param, text)
    if "_" in text:
        text = _KEY.sub(r"\1_" + REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", text)
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _CREDENTIALS.sub(r"\1\2" + REDACTED, text)
    return text


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message``, redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (ASCII: a message's odd characters are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = str(request_id)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


def _iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def logging_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (which uvicorn applies as its ``log_config``):
    the root logger writes to stderr with the chosen formatter at ``level``, and uvicorn's
    loggers have no handlers of their own but propagate to it."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    uvicorn = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"millpond": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "millpond",
            }
        },
        "loggers": {name: {"handlers": [], "propagate": True} for name in uvicorn},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
