"""``/metrics``: Prometheus' text format for a server admin's key or the scrape token;
every other caller is refused, and nothing about it needs an API key of the scraper."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from millpond.server.config import Settings
from millpond.server.testing import ServerThread, free_port, start_server

TOKEN = "scrape-" + "s" * 20


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own, so the counts are this test's only."""
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("metrics") / "data",
        gateway_port=free_port(),
        metrics_token=TOKEN,
    )
    running = start_server(settings)
    yield running
    running.stop()


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def test_requests_by_route_status_and_the_live_gauges(scraped: ServerThread) -> None:
    admin = {"Authorization": f"Bearer {scraped.admin_key}"}
    with httpx.Client(base_url=scraped.url, timeout=30) as http:
        assert http.get("/v1/health").status_code == 200
        assert http.get("/v1/databases/nobody/nothing", headers=admin).status_code == 404
        assert http.get("/no/such/path/" + "x" * 40).status_code == 404
        r = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    seen = _families(r.text)
    requests = seen["millpond_http_requests_total"]
    health = (("method", "GET"), ("route", "/v1/health"), ("status", "200"))
    assert requests[health] >= 1
    missing = (("method", "GET"), ("route", "/v1/databases/{owner}/{name}"), ("status", "404"))
    assert requests[missing] == 1  # by the route's template, not the path
    assert requests[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    assert not any("x" * 40 in str(labels) for labels in requests)
    assert seen["millpond_http_request_duration_seconds_count"]
    assert seen["millpond_up"][()] == 1.0
    for gauge in ("realtime_connections", "realtime_streams", "gateway_sessions"):
        assert seen[f"millpond_{gauge}"][()] == 0.0
    assert re.search(r'millpond_info\{version="[^"]+"\} 1\.0', r.text)


def test_only_admins_and_the_token_read_them(scraped: ServerThread) -> None:
    with httpx.Client(base_url=scraped.url, timeout=30) as http:
        admin = {"Authorization": f"Bearer {scraped.admin_key}"}
        assert http.get("/metrics", headers=admin).status_code == 200
        r = http.post("/v1/users", json={"username": "plain"}, headers=admin)
        assert r.status_code == 201, r.text
        user_key = r.json()["api_key"]["secret"]
        for headers, status, code in [
            ({}, 401, "unauthorized"),
            ({"Authorization": "Basic abc"}, 401, "unauthorized"),
            ({"Authorization": "Bearer " + TOKEN[:-1]}, 401, "unauthorized"),
            ({"Authorization": "Bearer mp_" + "x" * 40}, 401, "unauthorized"),
            ({"Authorization": f"Bearer {user_key}"}, 403, "admin_required"),
        ]:
            r = http.get("/metrics", headers=headers)
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code


def test_request_ids_and_the_access_log(
    scraped: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="millpond.access"),
        httpx.Client(base_url=scraped.url, timeout=30) as http,
    ):
        mine = http.get("/v1/health", headers={"X-Request-Id": "trace-42.a"})
        made = http.get("/v1/health?access_token=mp_secret")
        odd = http.get("/v1/health", headers={"X-Request-Id": "no spaces or " + "x" * 70})
    assert mine.headers["x-request-id"] == "trace-42.a"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])  # refused: a new one
    lines = [r.getMessage() for r in caplog.records if r.name == "millpond.access"]
    assert any(re.fullmatch(r"GET /v1/health 200 [0-9.]+ms id=trace-42\.a", x) for x in lines)
    assert f"id={made.headers['x-request-id']}" in "\n".join(lines)
    # the query string is never logged by the server (the test's own client, httpx, logs
    # its URLs when an earlier test of the process turned its INFO records on)
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith("http")]
    assert server_side and not any("mp_secret" in line for line in server_side)
