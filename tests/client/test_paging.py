"""The SDK's ``iter*`` methods: every paged list walked to its end, a page per request, as
lazily as the loop asks, sync and async. Against the real server (more items than one
page, with a small ``page_size``), then against the fake one for what a real server does
not do on cue (a failed page retried, a page answered twice)."""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, get_type_hints

import httpx
import pytest

from millpond import AsyncMillpond, Millpond, MillpondError

from .conftest import FAST, KEY, FakeServer, Reply

N = 7
"""Items made of each kind: more than two pages of :data:`SIZE`."""
SIZE = 3
PAGES = 3
"""Requests to walk N items SIZE at a time (3 + 3 + 1)."""

EXERCISED: set[str] = set()
"""``resource.iter_name`` of every iterator the tests below walk."""


@dataclass
class Walk:
    items: list[Any]
    paths: list[str]
    """The path of every request sent, in order."""

    def count(self, path_end: str) -> int:
        return sum(path.endswith(path_end) for path in self.paths)


def walk(base_url: str, key: str, fn: Callable[[Any], Any], name: str, **client: Any) -> list[Walk]:
    """``fn(mp)`` (an iterator of ``mp``) read to its end with a ``Millpond``, then with an
    ``AsyncMillpond`` (``async for``), each with its own record of the requests sent."""
    EXERCISED.add(name)
    kwargs = {"api_key": key, "base_url": base_url, **client}
    sync_paths: list[str] = []

    def record(request: httpx.Request) -> None:
        sync_paths.append(request.url.path)

    with (
        httpx.Client(event_hooks={"request": [record]}) as http,
        Millpond(http_client=http, **kwargs) as mp,
    ):
        sync = Walk(list(fn(mp)), sync_paths)

    async def main() -> Walk:
        paths: list[str] = []

        async def record(request: httpx.Request) -> None:
            paths.append(request.url.path)

        async with (
            httpx.AsyncClient(event_hooks={"request": [record]}) as http,
            AsyncMillpond(http_client=http, **kwargs) as amp,
        ):
            return Walk([item async for item in fn(amp)], paths)

    return [sync, asyncio.run(main())]


# -- the real server -------------------------------------------------------------------


@dataclass
class Setup:
    key: str
    username: str
    env: str


@pytest.fixture(scope="module")
def setup(base_url: str, make_user: Callable[..., tuple[str, str]]) -> Iterator[Setup]:
    """A user with a flags environment holding N of everything paged."""
    username, key = make_user(prefix="paging")
    with Millpond(api_key=key, base_url=base_url) as mp:
        env = mp.flags.create_environment("paging").id
    with Millpond(api_key=key, base_url=base_url, environment=env) as mp:
        for i in range(N):
            mp.companies.upsert_company(keys={"id": f"c{i}"}, name=f"Company {i}")
        for i in range(N):
            mp.flags.create(f"f{i}")
            mp.flags.create_feature(f"feat{i}")
            mp.flags.create_plan(f"plan{i}")
            mp.companies.upsert_user(keys={"id": f"u{i}"}, company={"id": "c0"})
            mp.flags.create_entitlement(
                plan_id="plan0", feature_id=f"feat{i}", value_type="boolean"
            )
            mp.flags.create_override(
                feature_id=f"feat{i}", value_type="boolean", company={"id": "c1"}
            )
    yield Setup(key, username, env)


def test_flags_every_one_once_in_order_a_page_per_request(setup: Setup, base_url: str) -> None:
    keys = [f"f{i}" for i in range(N)]
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter(page_size=SIZE),
        "flags.iter",
        environment=setup.env,
    ):
        assert [f.key for f in run.items] == keys
        assert run.count("/flags") == PAGES
    # from a cursor on: six left, two full pages then an empty one that ends the walk
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter(after="f0", page_size=SIZE),
        "flags.iter",
        environment=setup.env,
    ):
        assert [f.key for f in run.items] == keys[1:]
        assert run.count("/flags") == 3


def test_the_flags_filters_hold_on_every_page(
    setup: Setup, base_url: str, make_user: Callable[..., tuple[str, str]]
) -> None:
    _, key = make_user(prefix="paging")
    with Millpond(api_key=key, base_url=base_url) as mp:
        env = mp.flags.create_environment("deleted").id
    with Millpond(api_key=key, base_url=base_url, environment=env) as mp:
        for i in range(N):
            mp.flags.create(f"g{i}")
        for i in (1, 4, 5):
            mp.flags.delete(f"g{i}")
    for run in walk(
        base_url, key, lambda mp: mp.flags.iter(page_size=2), "flags.iter", environment=env
    ):
        assert [f.key for f in run.items] == ["g0", "g2", "g3", "g6"]
    for run in walk(
        base_url,
        key,
        lambda mp: mp.flags.iter(include_deleted=True, page_size=2),
        "flags.iter",
        environment=env,
    ):
        assert [f.key for f in run.items] == [f"g{i}" for i in range(N)]
        assert [f.deleted_at is not None for f in run.items].count(True) == 3


@pytest.mark.parametrize(
    ("name", "iterate", "ids", "path"),
    [
        (
            "flags.iter_features",
            lambda mp: mp.flags.iter_features(page_size=SIZE),
            [f"feat{i}" for i in range(N)],
            "/features",
        ),
        (
            "flags.iter_plans",
            lambda mp: mp.flags.iter_plans(page_size=SIZE),
            [f"plan{i}" for i in range(N)],
            "/plans",
        ),
    ],
)
def test_configuration_lists_by_id(
    setup: Setup, base_url: str, name: str, iterate: Callable[[Any], Any], ids: list[str], path: str
) -> None:
    for run in walk(base_url, setup.key, iterate, name, environment=setup.env):
        assert [item.id for item in run.items] == ids
        assert run.count(path) == PAGES


def test_entitlements_and_overrides_with_their_filters(setup: Setup, base_url: str) -> None:
    with Millpond(api_key=setup.key, base_url=base_url, environment=setup.env) as mp:
        entitlements = mp.flags.entitlements(plan_id="plan0", limit=1000)
        overrides = mp.flags.overrides(company_id=mp.companies.get_company({"id": "c1"}).id)
        company = overrides[0].company_id
    assert len(entitlements) == len(overrides) == N
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_entitlements(plan_id="plan0", page_size=SIZE),
        "flags.iter_entitlements",
        environment=setup.env,
    ):
        assert run.items == entitlements
        assert run.count("/entitlements") == PAGES
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_overrides(company_id=company, page_size=SIZE),
        "flags.iter_overrides",
        environment=setup.env,
    ):
        assert run.items == overrides
    # a filter that matches nothing: one request, nothing
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_entitlements(plan_id="plan6", page_size=SIZE),
        "flags.iter_entitlements",
        environment=setup.env,
    ):
        assert run.items == [] and run.count("/entitlements") == 1


def test_companies_and_users(setup: Setup, base_url: str) -> None:
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.companies.iter_companies(page_size=SIZE),
        "companies.iter_companies",
        environment=setup.env,
    ):
        assert sorted(c.keys["id"] for c in run.items) == [f"c{i}" for i in range(N)]
        assert [c.id for c in run.items] == sorted(c.id for c in run.items)
        assert len({c.id for c in run.items}) == N
        assert run.count("/companies") == PAGES
    with Millpond(api_key=setup.key, base_url=base_url, environment=setup.env) as mp:
        members = mp.companies.list_users(company_id=mp.companies.get_company({"id": "c0"}).id)
    assert len(members) == N
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.companies.iter_users(company_id=members[0].company_ids[0], page_size=SIZE),
        "companies.iter_users",
        environment=setup.env,
    ):
        assert [u.id for u in run.items] == [u.id for u in members]
        assert run.count("/users") == PAGES


def test_newest_first_logs_page_with_before(setup: Setup, base_url: str) -> None:
    for _ in range(N):  # recorded checks (the SDK's checks are not: only ?record=true)
        r = httpx.post(
            f"{base_url}/v1/flags/environments/{setup.env}/flags/f1/check",
            params={"record": "true"},
            json={"company": {"id": "c0"}},
            headers={"Authorization": f"Bearer {setup.key}"},
        )
        assert r.status_code == 200, r.text
    with Millpond(api_key=setup.key, base_url=base_url, environment=setup.env) as mp:
        audit = mp.flags.audit(entity="plan", limit=1000)
        checks = mp.flags.checks(limit=1000)
    assert len(audit) == len(checks) == N
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_audit(entity="plan", page_size=SIZE),
        "flags.iter_audit",
        environment=setup.env,
    ):
        assert run.items == audit
        assert [e.id for e in run.items] == sorted((e.id for e in audit), reverse=True)
        assert run.count("/audit") == PAGES
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_checks(flag="f1", page_size=SIZE),
        "flags.iter_checks",
        environment=setup.env,
    ):
        assert run.items == checks
        assert run.count("/checks") == PAGES
    # from a cursor on: older than the newest
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_audit(entity="plan", before=audit[0].id, page_size=SIZE),
        "flags.iter_audit",
        environment=setup.env,
    ):
        assert run.items == audit[1:]


def test_events_page_newest_first(setup: Setup, base_url: str) -> None:
    with Millpond(api_key=setup.key, base_url=base_url, environment=setup.env) as mp:
        for i in range(N):
            mp.track("paged", company={"id": "c0"}, user={"id": f"u{i}"})
        mp.flush()
        events = mp.flags.events(event="paged", limit=1000)
        assert len(events) == N and mp.flags.events(event="nope") == []
        assert [e.seq for e in events] == sorted((e.seq for e in events), reverse=True)
        assert [e.user_id for e in mp.flags.events(event="paged", user_id=events[0].user_id)] == [
            events[0].user_id
        ]
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_events(event="paged", page_size=SIZE),
        "flags.iter_events",
        environment=setup.env,
    ):
        assert run.items == events
        assert run.count("/events") == PAGES
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.flags.iter_events(event="paged", before=events[0].seq, page_size=SIZE),
        "flags.iter_events",
        environment=setup.env,
    ):
        assert run.items == events[1:]


def test_import_and_export_jobs(setup: Setup, base_url: str) -> None:
    with Millpond(api_key=setup.key, base_url=base_url) as mp:
        db = mp.databases.create("jobs").full_name
        for i in range(N):
            mp.exports.create(db, query_string=f"SELECT {i} AS n")
            mp.imports.create(db, f"t{i}", file=io.BytesIO(b"n\n1\n"), file_name="t.csv")
        exports, imports = mp.exports.list(limit=1000), mp.imports.list(limit=1000)
    assert len(exports) == len(imports) == N
    for run in walk(
        base_url, setup.key, lambda mp: mp.exports.iter(page_size=SIZE), "exports.iter"
    ):
        assert [j.id for j in run.items] == [j.id for j in exports]
        assert run.count("/exports") == PAGES
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.imports.iter(database=db, page_size=SIZE),
        "imports.iter",
    ):
        assert [j.id for j in run.items] == [j.id for j in imports]
        assert run.count("/imports") == PAGES
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.imports.iter(before=imports[2].id, page_size=SIZE),
        "imports.iter",
    ):
        assert [j.id for j in run.items] == [j.id for j in imports[3:]]


LOGGER = """
from millpond.module import ReducerContext, reducer

@reducer
def chatter(ctx: ReducerContext, n: int) -> None:
    for i in range(n):
        ctx.log.info("line %s", i)
"""


def test_module_logs(setup: Setup, base_url: str, tmp_path: Any) -> None:
    source = tmp_path / "logger.py"
    source.write_text(LOGGER)
    with Millpond(api_key=setup.key, base_url=base_url) as mp:
        db = mp.databases.create("logs").full_name
        mp.modules.publish(db, source)
        mp.modules.call(db, "chatter", N)
        lines = mp.modules.logs(db, limit=1000)
    assert [line.message for line in lines] == [f"line {i}" for i in range(N)]
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.modules.iter_logs(db, page_size=SIZE),
        "modules.iter_logs",
    ):
        assert run.items == lines
        assert run.count("/module/logs") == PAGES
    for run in walk(
        base_url,
        setup.key,
        lambda mp: mp.modules.iter_logs(db, after=lines[4].id, page_size=SIZE),
        "modules.iter_logs",
    ):
        assert run.items == lines[5:]


# -- the fake server: what the real one does not do on cue ----------------------------------


def _line(i: int) -> dict[str, Any]:
    return {"id": i, "ts": "2024-05-01T00:00:00Z", "version": 1, "level": "INFO", "message": "m"}


def _lines(*ids: int) -> Reply:
    return Reply(200, [_line(i) for i in ids])


def _read(fake: FakeServer, mode: str, take: int | None = None, **kwargs: Any) -> list[int]:
    """The ids of ``mp.modules.iter_logs("a/b", **kwargs)`` from the fake server, all of
    them or the first ``take``."""
    client = {"api_key": KEY, "base_url": fake.url, "retry_policy": FAST}
    if mode == "sync":
        with Millpond(**client) as mp:
            found = []
            for line in mp.modules.iter_logs("a/b", **kwargs):
                found.append(line.id)
                if len(found) == take:
                    break
            return found

    async def main() -> list[int]:
        async with AsyncMillpond(**client) as amp:
            found = []
            async for line in amp.modules.iter_logs("a/b", **kwargs):
                found.append(line.id)
                if len(found) == take:
                    break
            return found

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_pages_are_fetched_only_when_the_loop_gets_there(fake: FakeServer, mode: str) -> None:
    fake.reply(_lines(1, 2), _lines(3, 4), _lines(5))
    assert _read(fake, mode, take=2, page_size=2) == [1, 2]
    assert len(fake.requests) == 1
    assert fake.last.query == {"after": ["0"], "limit": ["2"]}
    fake.requests.clear()
    assert _read(fake, mode, take=3, page_size=2) == [1, 2, 3]
    assert [r.query["after"] for r in fake.requests] == [["0"], ["2"]]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failed_page_is_retried_and_the_walk_goes_on(fake: FakeServer, mode: str) -> None:
    fake.reply(_lines(1, 2), Reply(503, {"error": {"code": "unavailable"}}), _lines(3))
    assert _read(fake, mode, page_size=2) == [1, 2, 3]
    assert [r.query["after"] for r in fake.requests] == [["0"], ["2"], ["2"]]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_page_answered_again_is_an_error_not_a_loop(fake: FakeServer, mode: str) -> None:
    fake.reply(_lines(1, 2))  # the same full page, whatever the cursor
    with pytest.raises(MillpondError, match="again"):
        _read(fake, mode, page_size=2)
    assert len(fake.requests) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("size", [0, -1, 1001])
def test_a_bad_page_size_sends_nothing(fake: FakeServer, mode: str, size: int) -> None:
    with pytest.raises(ValueError, match="page_size must be 1 to 1000"):
        _read(fake, mode, page_size=size)
    assert fake.requests == []


# -- the surface -------------------------------------------------------------------------


def _paged_lists(resource: type) -> dict[str, inspect.Signature]:
    """The resource's methods answering one page: those taking ``limit`` and a cursor."""
    found = {}
    for name, method in vars(resource).items():
        if name.startswith("_") or not callable(method):
            continue
        params = inspect.signature(method).parameters
        if "limit" in params and ({"after", "before"} & set(params)):
            found[name] = inspect.signature(method)
    return found


def _twin(name: str) -> str:
    return "iter" if name == "list" else "iter_" + name.removeprefix("list_")


def test_every_paged_list_has_an_iterator_with_its_filters() -> None:
    seen = set()
    for attr, resource in get_type_hints(Millpond).items():
        for name, sig in _paged_lists(resource).items():
            twin = getattr(resource, _twin(name), None)
            assert twin is not None, f"{attr}.{name} has no {_twin(name)}"
            # (``last``: the newest few, not a walk)
            want = [p for p in sig.parameters if p not in ("limit", "since_version", "last")]
            got = [p for p in inspect.signature(twin).parameters if p != "page_size"]
            assert sorted(got) == sorted(want), (attr, name)
            assert _twin(name) in (resource.__dict__.get(name).__doc__ or ""), (attr, name)
            seen.add(f"{attr}.{_twin(name)}")
    assert seen == {
        "flags.iter",
        "flags.iter_audit",
        "flags.iter_checks",
        "flags.iter_events",
        "flags.iter_features",
        "flags.iter_plans",
        "flags.iter_entitlements",
        "flags.iter_overrides",
        "companies.iter_companies",
        "companies.iter_users",
        "imports.iter",
        "exports.iter",
        "modules.iter_logs",
    }


def test_every_iterator_is_walked_above() -> None:
    iterators = {
        f"{attr}.{name}"
        for attr, resource in get_type_hints(Millpond).items()
        for name in vars(resource)
        if name.startswith("iter")
    }
    assert iterators == EXERCISED
