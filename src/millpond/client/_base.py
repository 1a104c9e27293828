"""The sans-I/O core of the SDK, shared by the sync and async clients.

A resource method describes its request as a :class:`Call` (method, path, body, and how to
parse a success); :class:`Attempts` turns it into what to send, reads each answer or
transport failure, and says whether to return a value, wait and retry (via
:class:`~millpond.client.RetryPolicy`), or raise. The clients only send and sleep.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from .._version import __version__
from ..errors import (
    ConfigurationError,
    ConnectError,
    MillpondError,
    TimeoutError,
    TransportError,
    error_for_status,
)
from ..models import Count
from ._retry import RetryPolicy

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

API_KEY_ENV = "MILLPOND_API_KEY"
URL_ENV = "MILLPOND_URL"
ENVIRONMENT_ENV = "MILLPOND_ENVIRONMENT"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
USER_AGENT = f"millpond-python/{__version__}"

TimeoutTypes: TypeAlias = float | httpx.Timeout | None
"""Seconds (``None``: no limit) or an ``httpx.Timeout`` with separate phases."""


@dataclass(frozen=True)
class ClientConfig:
    """A client's settings, resolved from arguments and the environment."""

    api_key: str
    base_url: str
    timeout: httpx.Timeout
    max_retries: int
    retry_policy: RetryPolicy
    environment: str | None = None
    """The flags environment (id or name) flag calls use; ``None``: the one the API key is
    bound to."""
    offline: bool = False
    """No network at all: flag checks answer from defaults, events are dropped."""

    @classmethod
    def resolve(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: TimeoutTypes,
        max_retries: int,
        retry_policy: RetryPolicy | None,
        *,
        environment: str | None = None,
        offline: bool = False,
        keyless: bool = False,
    ) -> ClientConfig:
        """``keyless``: no API key at all (only for calls that need none)."""
        key = api_key or os.environ.get(API_KEY_ENV) or ("" if offline else None)
        if keyless:
            key = ""
        if key is None:
            raise ConfigurationError(
                f"no millpond API key: pass api_key=... or set the {API_KEY_ENV} "
                "environment variable (create a key with `millpond key create`)"
            )
        url = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL as exc:
            raise ConfigurationError(f"invalid millpond URL {url!r}: {exc}") from exc
        if scheme not in ("http", "https"):
            raise ConfigurationError(
                f"invalid millpond URL {url!r}: it must start with http:// or https:// "
                f"(pass base_url=... or set {URL_ENV})"
            )
        return cls(
            api_key=key,
            base_url=url,
            timeout=httpx.Timeout(timeout),
            max_retries=check_max_retries(max_retries),
            retry_policy=retry_policy or RetryPolicy(),
            environment=environment or os.environ.get(ENVIRONMENT_ENV) or None,
            offline=offline,
        )

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def identity(self) -> str | None:
        """The anonymous identity whose token this client holds (None for an API key)."""
        return identity_of_token(self.api_key)


TOKEN_PREFIX = "mpt_"
"""Anonymous identities' tokens: ``mpt_<database id>.<identity>.<nonce>.<signature>``."""


def identity_of_token(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    parts = token[len(TOKEN_PREFIX) :].split(".")
    return parts[1] if len(parts) == 4 else None


def read_token_file(path: Path) -> str | None:
    """The token kept in ``path`` (None if there is none yet)."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    return token or None


def write_token_file(path: Path, token: str) -> None:
    """Keep ``token`` in ``path``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    os.chmod(path, 0o600)


def check_max_retries(max_retries: int) -> int:
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, not {max_retries}")
    return max_retries


# -- calls: what a resource method asks for ------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: the request to send and how to read a successful answer."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    json: Any = None
    params: Mapping[str, str] | None = None
    idempotent: bool | None = None
    """Whether sending it twice is harmless; ``None``: guessed from the method."""


def parse_model(model: type[M]) -> Callable[[bytes], M]:
    return model.model_validate_json


def parse_list(model: type[M]) -> Callable[[bytes], list[M]]:
    def parse(content: bytes) -> list[M]:
        data = json.loads(content)
        if not isinstance(data, list):
            raise ValueError(f"expected a JSON array, got {type(data).__name__}")
        return [model.model_validate(item) for item in data]

    return parse


def parse_none(content: bytes) -> None:
    return None


def parse_count(content: bytes) -> int:
    return Count.model_validate_json(content).count


def body(model: BaseModel) -> dict[str, Any]:
    """A request model as JSON, leaving out unset optional fields (``None``)."""
    return model.model_dump(mode="json", exclude_none=True)


def segment(value: str | int) -> str:
    """One URL path segment, percent-quoted; empty, ``.`` and ``..`` are refused."""
    text = str(value)
    if text in ("", ".", ".."):
        raise ValueError(f"invalid path segment {text!r}")
    return quote(text, safe="")


def split_database(db: str) -> tuple[str, str]:
    """``"owner/name"`` → ``("owner", "name")``; ``ValueError`` for any other shape."""
    owner, sep, name = db.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"database names look like 'owner/name', not {db!r}")
    return owner, name


def database_path(db: str, *rest: str | int) -> str:
    owner, name = split_database(db)
    return "/".join(["/v1/databases", segment(owner), segment(name), *map(segment, rest)])


# -- attempts: one call, sent until it succeeds, fails for good, or runs out of retries ----


@dataclass(frozen=True)
class RequestSpec:
    """What to send: the arguments of ``httpx.Client.request``."""

    method: str
    url: str
    headers: dict[str, str]
    params: Mapping[str, str] | None
    json: Any
    timeout: httpx.Timeout


@dataclass(frozen=True)
class Retry:
    """Send the request again after ``delay`` seconds."""

    delay: float


class Attempts(Generic[T]):
    """The retry state machine of one call. Use::

    attempts = Attempts(config, call, timeout=..., max_retries=...)
    while True:
        try:
            response = send(attempts.request)
        except httpx.TransportError as exc:
            outcome = attempts.after_error(exc)  # a Retry, or raises
        else:
            outcome = attempts.after_response(response)  # value, Retry, or raises
        if not isinstance(outcome, Retry):
            return outcome
        sleep(outcome.delay)
    """

    def __init__(
        self,
        config: ClientConfig,
        call: Call[T],
        *,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> None:
        self.call = call
        self.policy = config.retry_policy
        self.max_retries = (
            config.max_retries if max_retries is None else check_max_retries(max_retries)
        )
        self.retries = 0
        self.request = RequestSpec(
            method=call.method,
            url=config.base_url + call.path,
            headers=config.headers(),
            params=call.params,
            json=call.json,
            timeout=config.timeout if timeout is None else httpx.Timeout(timeout),
        )

    def _retry(self, retry_after: float | None = None) -> Retry:
        delay = self.policy.delay(self.retries, retry_after)
        self.retries += 1
        return Retry(delay)

    def after_response(self, response: httpx.Response) -> T | Retry:
        """The parsed result of a success; a :class:`Retry`; or raises the ``ApiError``."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                return self.call.parse(response.content)
            except ValueError as exc:  # includes JSON and pydantic validation errors
                raise MillpondError(
                    f"unexpected answer to {self.call.method} {self.call.path} "
                    f"(HTTP {status}): {exc}"
                ) from exc
        if self.retries < self.max_retries and self.policy.should_retry(
            method=self.call.method, status_code=status, idempotent=self.call.idempotent
        ):
            retry_after = self.policy.parse_retry_after(response.headers.get("Retry-After"))
            return self._retry(retry_after)
        raise error_for_status(status, _decode(response))

    def after_error(self, error: httpx.TransportError) -> Retry:
        """A :class:`Retry` after a transport failure, or raises it as a millpond error."""
        if self.retries < self.max_retries and self.policy.should_retry(
            method=self.call.method, error=error, idempotent=self.call.idempotent
        ):
            return self._retry()
        what = f"{self.call.method} {self.request.url}"
        tries = f" (after {self.retries + 1} attempts)" if self.retries else ""
        if isinstance(error, httpx.TimeoutException):
            raise TimeoutError(f"{what} timed out{tries}: {error}") from error
        if isinstance(error, httpx.ConnectError):
            raise ConnectError(f"cannot connect for {what}{tries}: {error}") from error
        raise TransportError(f"{what} failed{tries}: {error!r}") from error


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
