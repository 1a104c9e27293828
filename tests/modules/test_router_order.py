"""The modules router is included first (its reducer calls are the hottest route, and
routes are tried in order): that is safe only while no other router has a route for the
same requests, which this pins."""

from __future__ import annotations

import re

from starlette.routing import BaseRoute, Route, compile_path

from millpond.server.app import create_app
from millpond.server.config import Settings
from millpond.server.modules import router as modules_router
from millpond.server.query import router as query_router


def _routes(routes: list[BaseRoute]) -> list[Route]:
    """The HTTP routes of an app or router, included routers flattened."""
    found: list[Route] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found.extend(_routes(included.routes))
        elif isinstance(route, Route):
            found.append(route)
    return found


def _sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_the_modules_router_comes_first_and_shares_no_request_with_another() -> None:
    app = create_app(Settings())
    ours = _routes(modules_router.router.routes)
    everyone = _routes(app.routes)
    # first the plain routes that serve the hottest requests (server/routing.py)
    assert everyone[:2] == [modules_router.call_route, query_router.query_route]
    api = [r for r in everyone[2:] if r.path.startswith("/v1/")]
    assert api[: len(ours)] == ours
    others = [r for r in everyone[1:] if r not in ours]
    assert ours and others
    for route in ours:
        regex = compile_path(route.path)[0]
        for other in others:
            other_regex = compile_path(other.path)[0]
            shared = (route.methods or set()) & (other.methods or set())
            overlap = regex.match(_sample(other.path)) or other_regex.match(_sample(route.path))
            assert not (shared and overlap), (route.path, other.path, shared)


def test_the_call_route_is_the_modules_router_s_first() -> None:
    first = _routes(modules_router.router.routes)[0]
    assert (first.path, first.methods) == ("/v1/databases/{owner}/{name}/call/{reducer}", {"POST"})
