"""Server-side flag checks over HTTP vs the HTTP query API's ``SELECT 1``, side by side.

Starts ``millpond up`` in a subprocess (its own embedded Postgres in a temporary data
directory) and sets up an environment the way an application would: a plan with a metered
entitlement (a monthly limit on an ``api-call`` event), a flag gating that feature with a
trait rule and a 30% rollout, 100 companies on the plan with a user each, and a few track
events per company. Then, over one kept-alive ``httpx.Client`` (what the SDK does), times:

* **check**: ``POST /v1/flags/environments/production/flags/api-access/check`` for a
  company and its user (compiled ruleset from the cache, company + user + overrides +
  metrics in one query, evaluation);
* **query SELECT 1** (the anchor): ``POST /v1/query`` ``SELECT 1`` on a database of the
  same server — the cheapest authenticated round trip to Postgres through the API;
* for context: **check, no keys** (no database round trip) and **check all** (every flag
  of the environment, 10 flags, for the same company and user).

Interleaves them in rounds of ``--batch`` requests each so drift hits all alike; prints
requests per second and per-request medians, then ``ratio vs query SELECT 1: X`` (check
time / query time: 1.0 means a check costs one query round trip) as the last line.

    python benchmarks/flags_check.py [--rounds 20] [--batch 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import httpx
from _harness import create_database, percentile, running_server

ENV = "/v1/flags/environments/production"
COMPANIES = 100


def setup(http: httpx.Client) -> None:
    def ok(r: httpx.Response) -> None:
        assert r.status_code < 300, r.text

    ok(http.post("/v1/flags/environments/defaults"))
    ok(http.post(f"{ENV}/plans", json={"id": "pro"}))
    ok(
        http.post(
            f"{ENV}/features",
            json={"id": "api", "feature_type": "event", "event_name": "api-call"},
        )
    )
    ok(
        http.post(
            f"{ENV}/entitlements",
            json={
                "plan_id": "pro",
                "feature_id": "api",
                "value_type": "numeric",
                "value_numeric": 1000,
                "metric_period": "current_month",
            },
        )
    )
    rules = [
        {
            "value": True,
            "conditions": [{"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"}],
        },
        {
            "value": True,
            "conditions": [{"condition_type": "rollout", "percentage": 30, "actor_key": "email"}],
        },
    ]
    ok(http.post(f"{ENV}/flags", json={"key": "api-access", "feature_id": "api", "rules": rules}))
    for n in range(9):
        ok(http.post(f"{ENV}/flags", json={"key": f"other-{n}", "rules": rules[n % 2 :][:1]}))
    events = []
    for n in range(COMPANIES):
        tier = "gold" if n % 5 == 0 else "silver"
        ok(
            http.post(
                f"{ENV}/companies",
                json={"keys": {"id": f"c{n}"}, "plan_id": "pro", "traits": {"tier": tier}},
            )
        )
        ok(
            http.post(
                f"{ENV}/users",
                json={"keys": {"email": f"u{n}@example.com"}, "company": {"id": f"c{n}"}},
            )
        )
        events += [
            {"event_type": "track", "event": "api-call", "company": {"id": f"c{n}"}}
            for _ in range(3)
        ]
    ok(http.post(f"{ENV}/events", json={"events": events}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()

    with running_server() as server:
        create_database(server, "bench", "SELECT 1")
        with server.client() as http:
            setup(http)

            def actor() -> dict[str, object]:
                n = random.randrange(COMPANIES)
                return {"company": {"id": f"c{n}"}, "user": {"email": f"u{n}@example.com"}}

            def check() -> None:
                r = http.post(f"{ENV}/flags/api-access/check", json=actor())
                assert r.status_code == 200 and r.json()["company_id"], r.text

            def check_bare() -> None:
                r = http.post(f"{ENV}/flags/api-access/check", json={})
                assert r.status_code == 200, r.text

            def check_all() -> None:
                r = http.post(f"{ENV}/check", json=actor())
                assert r.status_code == 200 and len(r.json()["flags"]) == 10, r.text

            def query() -> None:
                r = http.post("/v1/query", json={"database": "admin/bench", "sql": "SELECT 1"})
                assert r.status_code == 200, r.text

            methods: dict[str, Callable[[], None]] = {
                "check": check,
                "query SELECT 1": query,
                "check, no keys": check_bare,
                "check all (10 flags)": check_all,
            }
            for fn in methods.values():  # warm up pools and caches
                for _ in range(100):
                    fn()
            per_request: dict[str, list[float]] = {name: [] for name in methods}
            per_batch: dict[str, list[float]] = {name: [] for name in methods}
            for _ in range(args.rounds):
                order = list(methods.items())
                random.shuffle(order)
                for name, fn in order:
                    started = time.perf_counter()
                    for _ in range(args.batch):
                        t0 = time.perf_counter()
                        fn()
                        per_request[name].append((time.perf_counter() - t0) * 1000)
                    per_batch[name].append(time.perf_counter() - started)
            for name in methods:
                rate = args.batch / statistics.median(per_batch[name])
                values = per_request[name]
                print(
                    f"{name:>22}: {rate:8.0f} req/s  median {statistics.median(values):.3f} ms"
                    f"  p99 {percentile(values, 0.99):.3f} ms  (n={len(values)})"
                )
            ratio = statistics.median(per_batch["check"]) / statistics.median(
                per_batch["query SELECT 1"]
            )
            print(f"ratio vs query SELECT 1: {ratio:.2f}")


if __name__ == "__main__":
    main()
