"""Flags: time from a rule change to a connected SDK seeing it — millpond's live stream vs
flypper's TTL delta sync, side by side.

millpond: ``millpond up`` in a subprocess; an environment with one flag; the SDK's local
evaluation (``LiveFlags``, the live stream) connected with a key bound to the environment.
Each sample toggles the flag's default with ``PATCH`` and measures from the moment the
request is sent (so the HTTP round trip and the commit count too) until a check in this
process returns the new value (checks polled every 0.2 ms).

flypper 0.1.7: its ``Client`` with the default ``ttl=5`` over its in-memory storage (so no
storage latency counts against it), driven by a virtual clock: each sample changes the
flag at a random phase of the TTL window and advances the clock in 1 ms steps, calling
``client.flags()`` until the change shows. That is flypper's own code path; only the
waiting is simulated (otherwise a sample would take seconds). Schematic's SDK caches
check results for 5 s by default: the same staleness distribution for a hot flag.

    python benchmarks/flags_stream_latency.py [--samples 200]

Last line: ratio of flypper's p50 staleness to millpond's p50.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from _harness import running_server, summary
from flypper.client import Client as FlypperClient
from flypper.storage.in_memory import InMemoryStorage

from millpond import Millpond


def millpond_latencies(samples: int) -> list[float]:
    with running_server() as server, server.client() as http:
        env = http.post("/v1/flags/environments", json={"name": "bench"}).json()["id"]
        base = f"/v1/flags/environments/{env}"
        http.post(f"{base}/flags", json={"key": "beta"}).raise_for_status()
        key = http.post(f"{base}/keys", json={"scope": "read"}).json()["secret"]
        mp = Millpond(api_key=key, base_url=server.url, local_evaluation=True, cache_providers=[])
        live = mp._live
        assert live is not None
        try:
            if not live.wait_ready(30):
                raise SystemExit(f"the flags stream did not start: {live.failed}")
            latencies = []
            value = False
            for _ in range(samples):
                value = not value
                start = time.perf_counter()
                r = http.patch(f"{base}/flags/beta", json={"default_value": value})
                r.raise_for_status()
                while True:
                    found = live.evaluate(["beta"], None, None)  # what check_flag asks first
                    if found is not None and found[0].value is value:
                        break
                    if time.perf_counter() - start > 10:
                        raise SystemExit("a change did not arrive within 10 s")
                    time.sleep(0.0002)
                latencies.append((time.perf_counter() - start) * 1000)
                time.sleep(random.uniform(0, 0.02))
            return latencies
        finally:
            mp.close()


def flypper_latencies(samples: int, ttl: float = 5.0) -> list[float]:
    clock = [0.0]
    storage = InMemoryStorage()
    flag = {"name": "beta", "deleted": False, "enabled": False}
    storage.upsert({**flag, "enabled_for_actors": None, "enabled_for_percentage_of_actors": None})
    client = FlypperClient(storage=storage, ttl=ttl, time_fn=lambda: clock[0])
    client.flags()
    latencies = []
    value = False
    for _ in range(samples):
        clock[0] += random.uniform(0, ttl)  # the change lands at a random phase
        value = not value
        storage.upsert(
            {
                **flag,
                "enabled": value,
                "enabled_for_actors": None,
                "enabled_for_percentage_of_actors": None,
            }
        )
        changed_at = clock[0]
        while client.flags()["beta"].data["enabled"] is not value:
            clock[0] += 0.001
        latencies.append((clock[0] - changed_at) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    ours = millpond_latencies(args.samples)
    theirs = flypper_latencies(args.samples)
    print(summary("millpond live stream", ours))
    print(summary("flypper ttl=5s (virtual clock)", theirs))
    print(f"ratio vs flypper ttl=5s: {statistics.median(theirs) / statistics.median(ours):.1f}")


if __name__ == "__main__":
    main()
