"""Schemathesis fuzzes every operation of the OpenAPI schema against a real server — as a
normal user inside its own database and flags environment, as that user on random paths,
and as an admin: no answer is a 5xx, and every status, content type and body is one the
schema documents (the error statuses: ``millpond.server.openapi``).

It runs on a server of its own (its own Postgres), so what the fuzzer creates, changes or
deletes cannot disturb the session server other tests share. The run is bounded (few
examples per operation, no shrinking) and derandomized (a fixed seed): the same cases every
time, but for the values the fuzzer learns from answers (ids the server made up).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine.recorder import Interaction, ScenarioRecorder

from conftest import FlagsEnv
from millpond.server.app import create_app
from millpond.server.config import Settings
from millpond.server.openapi import ROUTE_ERRORS
from millpond.server.testing import ServerThread, free_port, start_server

SEED = 20261201
# ``FUZZ_DEEP=1 pytest tests/security/test_schemathesis.py``: 30 examples per operation
# and schemathesis' coverage phase (boundary and invalid values) too, ~10 minutes
DEEP = os.environ.get("FUZZ_DEEP") == "1"
MAX_EXAMPLES = 30 if DEEP else 6
COVERAGE = DEEP
# Operations that would end the run by revoking the fuzzer's own key: ``{}`` revokes every
# key of the caller, and the fuzzer learns its key's id from ``GET /v1/keys``.
EXCLUDED = [
    ("POST", "/v1/keys/revoke"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("DELETE", "/v2beta/api-key/"),  # bit.io's revoke: without api_key, every key
]
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz-data")
    settings_ = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=data_dir,
        gateway_port=free_port(),
        statement_timeout_ms=2000,
        query_max_rows=100,
    )
    running = start_server(settings_)
    yield running
    running.stop()


@dataclass
class Pass:
    """One fuzzing run: the key it calls with, path parameters it holds fixed (so the cases
    reach real resources), and operations it leaves out."""

    key: str
    parameters: dict[str, str] = field(default_factory=dict)
    excluded: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def passes(fuzz_server: ServerThread) -> dict[str, Pass]:
    """``user`` and ``admin``: random paths; ``owner``: the user in its own database and
    flags environment (which it must not delete or rename, to stay there)."""
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        admin = {"Authorization": f"Bearer {fuzz_server.admin_key}"}
        r = http.post("/v1/users", json={"username": "fuzzer"}, headers=admin)
        assert r.status_code == 201, r.text
        key = r.json()["api_key"]["secret"]
        auth = {"Authorization": f"Bearer {key}"}
        r = http.post("/v1/databases", json={"name": "fuzzdb"}, headers=auth)
        assert r.status_code == 201, r.text
        sql = "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (1, 'a')"
        r = http.post("/v1/query", json={"database": "fuzzer/fuzzdb", "sql": sql}, headers=auth)
        assert r.status_code == 200, r.text
        r = http.post("/v1/flags/environments", json={"name": "fuzzenv"}, headers=auth)
        assert r.status_code == 201, r.text
        env = r.json()["id"]
        r = http.post(f"/v1/flags/environments/{env}/flags", json={"key": "f"}, headers=auth)
        assert r.status_code == 201, r.text
    own = [
        ("DELETE", "/v1/databases/{owner}/{name}"),
        ("PATCH", "/v1/databases/{owner}/{name}"),
        ("DELETE", "/v1/flags/environments/{env}"),
        ("DELETE", "/v2beta/db/{owner}/{name}"),
        ("PATCH", "/v2beta/db/{owner}/{name}"),
    ]
    return {
        "user": Pass(key),
        "admin": Pass(fuzz_server.admin_key),
        "owner": Pass(key, {"owner": "fuzzer", "name": "fuzzdb", "env": env}, own),
    }


def _config(base_url: str, run: Pass) -> SchemathesisConfig:
    checks = {name: {"enabled": True} for name in CHECKS}
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "headers": {"Authorization": f"Bearer {run.key}"},
            "parameters": run.parameters,
            "request-timeout": 30,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "no-shrink": True,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": COVERAGE},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, **checks},
        }
    )


def _problems(recorder: ScenarioRecorder) -> Iterator[str]:
    """Each failed check of a scenario, with the request and the answer behind it."""
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                what = f"{recorder.label}: {check.name}: {failure.title}: {failure.message}"
                yield what + "\n" + _exchange(recorder.interactions.get(case_id))


def _exchange(interaction: Interaction | None) -> str:
    if interaction is None:
        return "  (no request recorded)"
    request, response = interaction.request, interaction.response
    sent = f"  request: {request.method} {request.uri} body={(request.body or b'')[:300]!r}"
    if response is None:
        return sent + "\n  no answer"
    return sent + f"\n  answer: {response.status_code} {response.content[:300]!r}"


def fuzz(base_url: str, run: Pass) -> list[str]:
    """Run schemathesis on every operation as ``run`` says; what it found, as text."""
    config = _config(base_url, run)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    for method, path in EXCLUDED + run.excluded:
        schema = schema.exclude(method=method, path=path)
    found: list[str] = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            found.extend(_problems(event.recorder))
        elif isinstance(event, events.NonFatalError):
            found.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return sorted(set(found))


# in this order: the owner while its database and environment are there (the ``user`` run
# may delete them: it learns their names from the answers), the admin last (it may delete
# the user, whose name it learns from GET /v1/users)
@pytest.mark.parametrize("who", ["owner", "user", "admin"])
def test_every_answer_is_documented(
    who: str, fuzz_server: ServerThread, passes: dict[str, Pass]
) -> None:
    run = passes[who]
    found = fuzz(fuzz_server.url, run)
    assert not found, f"{len(found)} problem(s):\n" + "\n".join(found)
    # the run called every operation as ``who`` to the end: its key still works
    auth = {"Authorization": f"Bearer {run.key}"}
    me = httpx.get(f"{fuzz_server.url}/v1/me", headers=auth)
    assert me.status_code == 200, me.text


def test_every_operation_documents_its_errors(tmp_path: Path) -> None:
    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    paths: dict[str, dict[str, Any]] = schema["paths"]
    operations = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert operations == set(ROUTE_ERRORS)  # none undeclared, none stale
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    schematic = {"$ref": "#/components/schemas/SchematicError"}  # the Schematic SDK's shape
    for path, item in paths.items():
        for operation in item.values():
            errors = {int(s) for s in operation["responses"] if int(s) >= 400}
            assert {500, 503} <= errors
            shape = schematic if path.startswith("/compat/schematic/") else envelope
            for status in errors:
                content = operation["responses"][str(status)]["content"]
                assert content == {"application/json": {"schema": shape}}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    me = paths["/v1/me"]["get"]["responses"]
    assert "401" in me and "403" not in me and "422" not in me
    assert "401" not in paths["/v1/health"]["get"]["responses"]
    download = paths["/v1/exports/{job_id}/download"]["get"]["responses"]
    assert {"403", "404", "410"} <= set(download) and "401" not in download
    assert "text/csv" in download["200"]["content"]
    assert {"400", "413", "422"} <= set(paths["/v1/query"]["post"]["responses"])
    assert "multipart/form-data" in paths["/v1/imports"]["post"]["requestBody"]["content"]
    assert {"200", "201"} <= set(paths["/v1/flags/environments/{env}/users"]["post"]["responses"])


# -- what the fuzzer found, pinned -----------------------------------------------------------

HUGE = str(2**90)


def test_integers_beyond_bigint_are_422_not_500(
    api: Callable[..., httpx.Response], flags_env: FlagsEnv
) -> None:
    base = f"/v1/flags/environments/{flags_env.id}"
    for path, param in [
        ("/checks", "before"),
        ("/events", "before"),
        ("/audit", "before"),
        ("/flags", "since_version"),
        ("/rulesets", "since_version"),
    ]:
        r = api("GET", f"{base}{path}", flags_env.key, params={param: HUGE})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "validation_error"
        r = api("GET", f"{base}{path}", flags_env.key, params={param: str(2**63 - 1)})
        assert r.status_code == 200, (path, r.text)


def test_odd_path_and_query_values_are_4xx(
    api: Callable[..., httpx.Response], make_user: Callable[..., tuple[str, str]]
) -> None:
    _, key = make_user(prefix="odd")
    r = api("GET", f"/v1/service-accounts/{HUGE}", key)
    assert r.status_code in (404, 422), r.text
    params = {"expires": "-4161", "signature": "\uef60\x00æ@å"}
    r = api("GET", "/v1/exports/ILIKE/download", params=params)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "invalid_signature"
    r = api("POST", "/v1/users", key, content=b"\xf4\xd4\x1c3rw ")  # not UTF-8, not JSON
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"]
