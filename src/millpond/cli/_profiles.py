"""Saved logins (``millpond login``): a server URL and an API key per profile, in
``credentials.json`` of the user's config directory (``$MILLPOND_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/millpond``, else ``~/.config/millpond``), readable by its owner only
(the folder 0700, the file 0600, written whole and renamed into place)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

CONFIG_DIR_ENV = "MILLPOND_CONFIG_DIR"
PROFILE_ENV = "MILLPOND_PROFILE"
DEFAULT_PROFILE = "default"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    key: str


def config_dir() -> Path:
    explicit = os.environ.get(CONFIG_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "millpond"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def check_name(name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{name!r} is not a profile name: letters, digits and . _ - (at most 64)"
        )
    return name


def _load() -> dict[str, Any]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"profiles": {}}
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the saved logins in {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ConfigurationError(f"{path} is not a millpond credentials file")
    return data


def _save(data: dict[str, Any]) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.parent.chmod(0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
    return path


def get(name: str) -> Profile | None:
    entry = _load()["profiles"].get(name)
    if not isinstance(entry, dict):
        return None
    url, key = entry.get("url"), entry.get("key")
    if not isinstance(url, str) or not isinstance(key, str):
        return None
    return Profile(name, url, key)


def put(profile: Profile) -> Path:
    data = _load()
    data["profiles"][check_name(profile.name)] = {"url": profile.url, "key": profile.key}
    return _save(data)


def remove(name: str) -> bool:
    data = _load()
    if data["profiles"].pop(name, None) is None:
        return False
    _save(data)
    return True
