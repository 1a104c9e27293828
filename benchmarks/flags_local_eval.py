"""Local flag evaluation per check: millpond's compiled engine vs flypper 0.1.7, side by side.

The flag set (one check = one flag evaluated for one company/user):

* ``beta-testers``: an actor list of 100 user emails;
* ``new-checkout``: a 30% rollout on the user's email;
* ``enterprise-export``: a trait rule, company trait ``tier`` equal to ``enterprise``;

and, for millpond only, the three rules on one flag (checked in that order).

millpond: ``CompiledFlag.evaluate(ctx)``, each flag compiled once, one ``EvalContext`` per
actor built beforehand (as the SDK does per request). flypper (the anchor):
``Flag.is_enabled(**entries)`` on equivalent flags (``enabled_for_actors`` on ``email``, a
30% ``enabled_for_percentage_of_actors`` on ``email``, and ``enabled_for_actors`` on the
``tier`` entry for the trait rule), one entries dict per actor built beforehand. flypper has
to be installed (``pip install flypper==0.1.7``); without it the anchor is skipped.
GrowthBook (``growthbook``): a ``GrowthBook(attributes=…, features=…)`` per actor built
beforehand, ``is_on(key)`` on features with a forced rule under an ``email $in`` condition,
a 30% ``coverage`` on ``email`` and a ``tier`` condition. Unleash (``UnleashClient``),
bootstrapped offline (no server, metrics and registration off): ``is_enabled(key,
context)`` with ``userWithId``, a 30% ``flexibleRollout`` on ``userId`` and a ``tier IN``
constraint. ``pip install -e ".[bench]"`` installs all three.

Both run the same loop over the same (flag, actor) sequence, in interleaved rounds; each
round times a batch of checks with ``time.perf_counter_ns`` and records ns per check. Prints
per-implementation medians (and per flag kind), agreement on the actor-list and trait
flags, the share each rollout enables, then ``ratio vs <anchor>: X`` per anchor (ours /
theirs, lower is faster) and, as the last line, the ratio vs the fastest anchor.

    python benchmarks/flags_local_eval.py [--rounds 300] [--batch 3000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from millpond.engine.flags import CompanyContext, EvalContext, UserContext, compile_flag
from millpond.models.flags import Condition, Flag, Rule

try:
    from flypper.entities.flag import Flag as FlypperFlag
except ImportError:  # the anchor is optional
    FlypperFlag = None
try:
    from growthbook import GrowthBook
except ImportError:
    GrowthBook = None
try:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache
except ImportError:
    UnleashClient = None

N_ACTORS = 1000
TIERS = ["free", "pro", "enterprise"]
BETA = [f"user{i}@example.com" for i in range(0, 2000, 20)]  # 100 emails, half of them actors


RULES = {
    "actors": Rule(
        id="beta",
        value=True,
        conditions=[Condition(condition_type="actor_list", actors=[{"email": e} for e in BETA])],
    ),
    "rollout": Rule(
        id="rollout",
        value=True,
        conditions=[Condition(condition_type="rollout", percentage=30, actor_key="email")],
    ),
    "trait": Rule(
        id="enterprise",
        value=True,
        conditions=[Condition(condition_type="trait", trait_key="tier", trait_value="enterprise")],
    ),
}
KEYS = {"actors": "beta-testers", "rollout": "new-checkout", "trait": "enterprise-export"}


def our_flags() -> dict[str, Any]:
    return {kind: compile_flag(Flag(key=KEYS[kind]), [rule]) for kind, rule in RULES.items()}


def combined_flag() -> Any:
    """The three rules on one flag (actor list, then rollout, then trait; millpond only:
    flypper ANDs its gates and has no trait rule)."""
    rules = [rule.model_copy(update={"priority": n}) for n, rule in enumerate(RULES.values())]
    return compile_flag(Flag(key="combined"), rules)


def flypper_flags() -> dict[str, Any]:
    assert FlypperFlag is not None

    def flag(name: str, actors: Any = None, percentage: Any = None) -> Any:
        return FlypperFlag(
            {
                "name": name,
                "deleted": False,
                "enabled": True,
                "enabled_for_actors": actors,
                "enabled_for_percentage_of_actors": percentage,
                "updated_at": 0.0,
                "version": 1,
            }
        )

    return {
        "actors": flag("beta-testers", actors={"actor_key": "email", "actor_ids": list(BETA)}),
        "rollout": flag("new-checkout", percentage={"actor_key": "email", "percentage": 30.0}),
        "trait": flag(
            "enterprise-export", actors={"actor_key": "tier", "actor_ids": ["enterprise"]}
        ),
    }


def growthbook_features() -> dict[str, Any]:
    """The same flags as GrowthBook feature definitions (evaluated in-process)."""
    force = {"force": True}
    return {
        "beta-testers": {
            "defaultValue": False,
            "rules": [{"condition": {"email": {"$in": list(BETA)}}, **force}],
        },
        "new-checkout": {
            "defaultValue": False,
            "rules": [{"coverage": 0.3, "hashAttribute": "email", **force}],
        },
        "enterprise-export": {
            "defaultValue": False,
            "rules": [{"condition": {"tier": "enterprise"}, **force}],
        },
    }


def unleash_client(directory: str) -> Any:
    """An Unleash client bootstrapped offline with the same flags (no server, no metrics)."""
    assert UnleashClient is not None
    features = [
        {
            "name": KEYS["actors"],
            "strategies": [{"name": "userWithId", "parameters": {"userIds": ",".join(BETA)}}],
        },
        {
            "name": KEYS["rollout"],
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "30", "stickiness": "userId", "groupId": "rollout"},
                }
            ],
        },
        {
            "name": KEYS["trait"],
            "strategies": [
                {
                    "name": "default",
                    "parameters": {},
                    "constraints": [
                        {"contextName": "tier", "operator": "IN", "values": ["enterprise"]}
                    ],
                }
            ],
        },
    ]
    cache = FileCache("bench", directory=directory)
    cache.bootstrap_from_dict(
        {"version": 1, "features": [{**f, "enabled": True} for f in features]}
    )
    client = UnleashClient(
        url="http://127.0.0.1:9",
        app_name="bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
        refresh_interval=3600,
    )
    client.initialize_client(fetch_toggles=False)
    return client


def actors() -> list[tuple[EvalContext, dict[str, str]]]:
    rng = random.Random(7)
    out = []
    for i in range(N_ACTORS):
        email = f"user{i}@example.com"
        tier = rng.choice(TIERS)
        company = CompanyContext(f"c{i % 97}", keys={"id": str(i % 97)}, traits={"tier": tier})
        user = UserContext(f"u{i}", keys={"email": email, "user_id": str(i)})
        out.append((EvalContext(company, user), {"email": email, "tier": tier}))
    return out


def run_ours(work: list[tuple[Any, EvalContext]]) -> int:
    t0 = time.perf_counter_ns()
    for compiled, ctx in work:
        compiled.evaluate(ctx)
    return time.perf_counter_ns() - t0


def run_growthbook(work: list[tuple[str, Any]]) -> int:
    t0 = time.perf_counter_ns()
    for key, gb in work:
        gb.is_on(key)
    return time.perf_counter_ns() - t0


def run_unleash(client: Any, work: list[tuple[str, dict[str, Any]]]) -> int:
    t0 = time.perf_counter_ns()
    for key, context in work:
        client.is_enabled(key, context)
    return time.perf_counter_ns() - t0


def run_flypper(work: list[tuple[Any, dict[str, str]]]) -> int:
    t0 = time.perf_counter_ns()
    for flag, entries in work:
        flag.is_enabled(**entries)
    return time.perf_counter_ns() - t0


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{name:>26}: median {statistics.median(values):7.0f} ns/check  p99 {p99:7.0f} ns"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batch", type=int, default=3000, help="checks timed together")
    args = parser.parse_args()

    population = actors()
    ours = our_flags()
    anchor = flypper_flags() if FlypperFlag is not None else None
    if anchor is None:
        print("flypper is not installed (pip install flypper==0.1.7): skipping the anchor")

    rng = random.Random(11)
    kinds = list(ours)
    sequence = [(rng.choice(kinds), rng.randrange(N_ACTORS)) for _ in range(args.batch)]
    our_work = [(ours[kind], population[i][0]) for kind, i in sequence]
    per_kind_ours = {
        kind: [(ours[kind], population[i][0]) for k, i in sequence if k == kind] for kind in kinds
    }
    combined = combined_flag()
    combined_work = [(combined, population[i][0]) for _, i in sequence]

    # agreement where the semantics are the same (the rollouts hash differently by design)
    shares: dict[str, float] = {}
    for name, flags in (("millpond", ours), ("flypper", anchor)):
        if flags is None:
            continue
        enabled = [
            ours[kind].evaluate(ctx).value if name == "millpond" else flags[kind].is_enabled(**e)
            for kind in kinds
            for ctx, e in population
        ]
        shares[name] = sum(enabled[N_ACTORS : 2 * N_ACTORS]) / N_ACTORS
    if anchor is not None:
        for kind in ("actors", "trait"):
            same = all(
                ours[kind].evaluate(ctx).value == anchor[kind].is_enabled(**entries)
                for ctx, entries in population
            )
            print(f"{kind:>8} flag: millpond and flypper agree on every actor: {same}")

    timings: dict[str, list[float]] = {"millpond": []}
    runs: dict[str, Callable[[], int]] = {"millpond": lambda: run_ours(our_work)}
    kind_timings: dict[str, list[float]] = {f"millpond {kind}": [] for kind in kinds}
    kind_timings["millpond 3 rules, 1 flag"] = []
    if anchor is not None:
        fly_work = [(anchor[kind], population[i][1]) for kind, i in sequence]
        timings["flypper"] = []
        runs["flypper"] = lambda: run_flypper(fly_work)
        per_kind_fly = {
            kind: [(anchor[kind], population[i][1]) for k, i in sequence if k == kind]
            for kind in kinds
        }
        kind_timings.update({f"flypper {kind}": [] for kind in kinds})

    if GrowthBook is not None:
        features = growthbook_features()
        books = [GrowthBook(attributes=e, features=features) for _, e in population]
        gb_work = [(KEYS[kind], books[i]) for kind, i in sequence]
        timings["growthbook"] = []
        runs["growthbook"] = lambda: run_growthbook(gb_work)
        gb_share = sum(b.is_on(KEYS["rollout"]) for b in books) / N_ACTORS
        same = all(
            ours[kind].evaluate(ctx).value == books[n].is_on(KEYS[kind])
            for kind in ("actors", "trait")
            for n, (ctx, _) in enumerate(population)
        )
        print(f"actors+trait flags: millpond and GrowthBook agree on every actor: {same}")
        shares["growthbook"] = gb_share
    unleash = None
    if UnleashClient is not None:
        unleash = unleash_client(tempfile.mkdtemp(prefix="unleash-bench-"))
        contexts = [
            {"userId": e["email"], "properties": {"tier": e["tier"]}} for _, e in population
        ]
        un_work = [(KEYS[kind], contexts[i]) for kind, i in sequence]
        timings["unleash"] = []
        runs["unleash"] = lambda: run_unleash(unleash, un_work)
        same = all(
            ours[kind].evaluate(ctx).value == unleash.is_enabled(KEYS[kind], contexts[n])
            for kind in ("actors", "trait")
            for n, (ctx, _) in enumerate(population)
        )
        print(f"actors+trait flags: millpond and Unleash agree on every actor: {same}")
        shares["unleash"] = sum(unleash.is_enabled(KEYS["rollout"], c) for c in contexts) / N_ACTORS

    for fn in runs.values():  # warm up
        for _ in range(5):
            fn()
    for _ in range(args.rounds):
        order = list(runs.items())
        random.shuffle(order)
        for name, fn in order:
            timings[name].append(fn() / len(sequence))
    for _ in range(max(1, args.rounds // 3)):
        combined_ns = run_ours(combined_work) / len(combined_work)
        kind_timings["millpond 3 rules, 1 flag"].append(combined_ns)
        for kind in kinds:
            work = per_kind_ours[kind]
            kind_timings[f"millpond {kind}"].append(run_ours(work) / len(work))
            if anchor is not None:
                fly = per_kind_fly[kind]
                kind_timings[f"flypper {kind}"].append(run_flypper(fly) / len(fly))

    # what building the request context costs, once per request, for one company and user
    t0 = time.perf_counter_ns()
    for i in range(10_000):
        EvalContext(
            CompanyContext("c1", keys={"id": "1"}, traits={"tier": "pro"}),
            UserContext(f"u{i}", keys={"email": "a@example.com"}),
        )
    context_ns = (time.perf_counter_ns() - t0) / 10_000

    for name, values in timings.items():
        print(summary(f"{name} (flag set)", values))
    for name, values in kind_timings.items():
        print(summary(name, values))
    print(f"{'context per request':>26}: {context_ns:7.0f} ns (millpond, not in the above)")
    for name, share in shares.items():
        print(f"{name:>10} 30% rollout enables {share:.1%} of {N_ACTORS} actors")
    if unleash is not None:
        unleash.destroy()
    ours_median = statistics.median(timings["millpond"])
    print(f"p50 goal < 2000 ns per check: {'met' if ours_median < 2000 else 'NOT met'}")
    anchors = {n: statistics.median(v) for n, v in timings.items() if n != "millpond"}
    for name, median in anchors.items():
        print(f"ratio vs {name}: {ours_median / median:.3f}")
    if not anchors:
        print("ratio vs anchors: n/a (none installed: pip install -e '.[bench]')")
    else:
        fastest = min(anchors, key=lambda n: anchors[n])
        print(f"ratio vs {fastest} (the fastest anchor): {ours_median / anchors[fastest]:.2f}")


if __name__ == "__main__":
    main()
