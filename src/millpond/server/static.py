"""Files the server ships and serves by name (the console's stylesheet and script, the API
docs page's Swagger UI): only the names a caller lists are served, so no path reaches
any other file; any other name is the API's 404 ``not_found``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fastapi.responses import Response

from .errors import ServiceError


class StaticFiles:
    def __init__(self, directory: Path, types: Mapping[str, str], what: str, max_age: int):
        self.directory = directory
        self.types = types
        """Name → media type of every file served."""
        self.what = what
        """Whose files, for the 404's message ("console", "docs")."""
        self.cache_control = f"public, max-age={max_age}"

    def response(self, name: str) -> Response:
        kind = self.types.get(name)
        if kind is None:
            raise ServiceError(404, "not_found", f"no {self.what} file {name!r}")
        body = (self.directory / name).read_bytes()
        return Response(body, media_type=kind, headers={"cache-control": self.cache_control})
