from collections.abc import Callable

import httpx


def test_health_reports_postgres(api: Callable[..., httpx.Response]) -> None:
    r = api("GET", "/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["postgres"]["ok"] is True
    assert body["postgres"]["mode"] == "embedded"
    assert body["postgres"]["version"].startswith("16")
