"""Downloading an import's ``file_url``: http and https only, to public addresses only
(unless ``MILLPOND_TRANSFER_ALLOW_PRIVATE_URLS``), size-capped, streamed to disk.

The address check is made on every address the host name resolves to *and* on the
address the connection really reached (so DNS that answers differently the second time
gains nothing), and again on every redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import JobError
from .progress import Progress

MAX_REDIRECTS = 5
_CHUNK = 1024 * 1024


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be fetched at all (scheme, shape), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs can be imported"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username or parts.password:
        return "URLs with credentials are not accepted"
    try:
        _ = parts.port
    except ValueError:
        return "the URL's port is not valid"
    return None


def _refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def literal_refused(url: str) -> bool:
    """Whether the URL's host is an IP literal (or localhost) that is not public."""
    host = urlsplit(url).hostname or ""
    if host.lower() in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return _refused(host)
    except ValueError:
        return False


def _check_host(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise JobError(
            "download_failed", f"cannot resolve {host!r}: {exc.strerror}", {"host": host}
        ) from exc
    for info in infos:
        address = str(info[4][0])
        if _refused(address):
            raise _not_allowed(host, address)


def _not_allowed(host: str, address: str) -> JobError:
    return JobError(
        "url_not_allowed",
        f"{host} is a loopback, link-local or private address ({address}); such URLs are"
        " refused unless the server allows them (MILLPOND_TRANSFER_ALLOW_PRIVATE_URLS)",
        {"host": host, "address": address},
    )


def _peer(response: httpx.Response) -> str | None:
    stream: Any = response.extensions.get("network_stream")
    if stream is None:
        return None
    addr = stream.get_extra_info("server_addr")
    return str(addr[0]) if addr else None


def download(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    progress: Progress,
) -> str | None:
    """Fetch ``url`` into ``dest``; return a file name for it (from the final URL or the
    ``Content-Disposition`` header), if any."""
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            why = check_url(url)
            if why:
                raise JobError("invalid_url", f"{why}: {url}", {"url": url})
            parts = urlsplit(url)
            host = parts.hostname or ""
            if not allow_private:
                if literal_refused(url):
                    raise _not_allowed(host, host)
                _check_host(host, parts.port or (443 if parts.scheme == "https" else 80))
            try:
                with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as r:
                    peer = _peer(r)
                    if not allow_private and peer is not None and _refused(peer):
                        raise _not_allowed(host, peer)
                    if r.is_redirect and "location" in r.headers:
                        url = str(r.url.join(r.headers["location"]))
                        continue
                    if r.status_code != 200:
                        raise JobError(
                            "download_failed",
                            f"GET {url} answered HTTP {r.status_code}",
                            {"url": url, "status": r.status_code},
                        )
                    length = r.headers.get("content-length")
                    if length and length.isdigit() and int(length) > max_bytes:
                        raise _too_big(max_bytes)
                    if length and length.isdigit():
                        progress.bytes_total = int(length)
                    total = 0
                    with dest.open("wb") as f:
                        for chunk in r.iter_raw(_CHUNK):
                            total += len(chunk)
                            if total > max_bytes:
                                raise _too_big(max_bytes)
                            f.write(chunk)
                            progress.bytes_done = total
                            progress.check()
                    return _file_name(r)
            except httpx.HTTPError as exc:
                raise JobError(
                    "download_failed", f"downloading {url} failed: {exc}", {"url": url}
                ) from exc
    raise JobError("download_failed", f"more than {MAX_REDIRECTS} redirects", {"url": url})


def _too_big(limit: int) -> JobError:
    return JobError(
        "file_too_large",
        f"the file is larger than {limit} bytes (MILLPOND_TRANSFER_MAX_FILE_BYTES)",
        {"limit": limit},
    )


def _file_name(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            return value.strip('"') or None
    path = response.url.path.rsplit("/", 1)[-1]
    return path or None
