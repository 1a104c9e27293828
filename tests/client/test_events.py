"""``identify`` and ``track``: buffered, sent in batches by a background worker (a thread for
``Millpond``, a task for ``AsyncMillpond``), flushed at ``close()`` and at exit, bounded,
retried with the same idempotency keys so nothing counts twice; ``EventQueue`` on its own.

The real server counts what arrives (its metrics); ``FakeServer`` and a forwarding proxy
stand in for a failing network."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from _waiting import eventually
from millpond import (
    AsyncMillpond,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    Millpond,
    RetryPolicy,
    ServerError,
    TransportError,
)
from millpond.client import EventOptions, EventStats, _event_workers
from millpond.client._events import EventQueue, Send, Wait, track_event
from millpond.models.flags import EventsAccepted, TrackEvent

from .conftest import FAST, KEY, FakeServer, Reply

ACME = {"id": "acme"}
QUIET = EventOptions(flush_interval=3600.0)
"""Nothing leaves the buffer until a flush (or a full batch, or close)."""


# -- a flags environment on the real server ----------------------------------------------------


@dataclass
class FlagsEnv:
    base_url: str
    key: str
    id: str
    http: httpx.Client

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(
            method,
            f"/v1/flags/environments/{self.id}{path}",
            headers={"Authorization": f"Bearer {self.key}"},
            **kwargs,
        )
        assert r.is_success, (r.status_code, r.text)
        return r.json()

    def entity(self, kind: str, keys: dict[str, str]) -> dict[str, Any]:
        found: dict[str, Any] = self.ok("POST", f"/{kind}/lookup", json={"keys": keys})
        return found

    def metrics(self, kind: str, keys: dict[str, str]) -> dict[tuple[str, str], Any]:
        """``{(event, aggregation): all-time value}`` of a company or user."""
        found = self.ok("GET", f"/{kind}/{self.entity(kind, keys)['id']}/metrics")
        return {
            (m["event"], m["aggregation"]): m["value"] for m in found if m["period"] == "all_time"
        }

    def client(self, **kwargs: Any) -> Millpond:
        return Millpond(self.key, self.base_url, environment=self.id, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncMillpond:
        return AsyncMillpond(self.key, self.base_url, environment=self.id, **kwargs)


@pytest.fixture
def fenv(base_url: str, make_user: Callable[..., tuple[str, str]]) -> Iterator[FlagsEnv]:
    """A new user's fresh flags environment."""
    _, key = make_user(prefix="events")
    with httpx.Client(base_url=base_url, timeout=60) as http:
        r = http.post(
            "/v1/flags/environments",
            json={"name": f"ev{time.monotonic_ns()}"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 201, r.text
        yield FlagsEnv(base_url, key, r.json()["id"], http)


def _sent(fake: FakeServer) -> list[dict[str, Any]]:
    """Every event of every request the fake server got, in order (retries included)."""
    return [event for seen in fake.requests for event in seen.json["events"]]


# -- against the real server -------------------------------------------------------------------


def test_identify_then_track_reach_the_metrics(fenv: FlagsEnv) -> None:
    with fenv.client() as mp:
        mp.identify(
            {"email": "wcoyote@acme.net"},
            company={"keys": ACME, "name": "Acme Widgets", "traits": {"city": "Atlanta"}},
            name="Wile E. Coyote",
            traits={"login_count": 24},
        )
        mp.track("call", company=ACME, user={"email": "wcoyote@acme.net"}, quantity=3)
        mp.track("call", company=ACME)
        assert mp.flush() is True
        stats = mp.event_stats
    assert (stats.queued, stats.sent, stats.pending, stats.dropped, stats.failed) == (3, 3, 0, 0, 0)
    company = fenv.entity("companies", ACME)
    assert company["name"] == "Acme Widgets" and company["traits"] == {"city": "Atlanta"}
    user = fenv.entity("users", {"email": "wcoyote@acme.net"})
    assert user["name"] == "Wile E. Coyote" and user["company_ids"] == [company["id"]]
    assert fenv.metrics("companies", ACME)[("call", "count")] == 2
    assert fenv.metrics("companies", ACME)[("call", "sum")] == 4
    assert fenv.metrics("users", {"email": "wcoyote@acme.net"})[("call", "sum")] == 3


def test_many_events_go_in_batches_each_counted_once(fenv: FlagsEnv) -> None:
    batches: list[list[dict[str, Any]]] = []

    def seen(request: httpx.Request) -> None:
        if request.url.path.endswith("/events"):
            batches.append(json.loads(request.read())["events"])

    options = EventOptions(batch_size=40, flush_interval=0.05)
    with (
        httpx.Client(event_hooks={"request": [seen]}) as http,
        fenv.client(http_client=http, event_options=options) as mp,
    ):

        def burst(n: int) -> None:
            for i in range(60):
                mp.track("burst", company={"id": f"c{n}"}, quantity=i)

        threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert mp.flush()
        assert mp.event_stats.sent == 240 and mp.event_stats.duplicates == 0
    assert len(batches) >= 6 and all(1 <= len(batch) <= 40 for batch in batches)
    keys = [event["idempotency_key"] for batch in batches for event in batch]
    assert len(keys) == len(set(keys)) == 240  # no retries here: each event sent once
    for n in range(4):
        figures = fenv.metrics("companies", {"id": f"c{n}"})
        assert figures[("burst", "count")] == 60
        assert figures[("burst", "sum")] == sum(range(60))


def test_close_sends_what_is_buffered(fenv: FlagsEnv) -> None:
    mp = fenv.client(event_options=QUIET)
    for _ in range(3):
        mp.track("closing", company=ACME, quantity=2)
    assert mp.event_stats.pending == 3  # the interval is an hour: still buffered
    mp.close()
    assert mp.event_stats.sent == 3 and mp.event_stats.pending == 0
    assert fenv.metrics("companies", ACME)[("closing", "sum")] == 6
    mp.track("late", company=ACME)  # after close: dropped, counted
    assert mp.event_stats.dropped == 1


CHILD = """
import os, sys
from millpond import Millpond
from millpond.client import EventOptions

mp = Millpond(os.environ["KEY"], os.environ["URL"], environment=os.environ["ENV"],
              event_options=EventOptions(flush_interval=3600))
mp.track("at-exit", company={"id": "acme"}, quantity=7)
mp.identify({"id": "u1"}, company={"keys": {"id": "acme"}}, name="exiting")
print(mp.event_stats.pending, flush=True)
# no close(), no flush(): the interpreter's exit sends them
"""


def test_the_interpreter_exit_sends_what_is_buffered(fenv: FlagsEnv) -> None:
    env = {**os.environ, "KEY": fenv.key, "URL": fenv.base_url, "ENV": fenv.id}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"  # both were still buffered when the script ended
    assert fenv.metrics("companies", ACME)[("at-exit", "sum")] == 7
    assert fenv.entity("users", {"id": "u1"})["name"] == "exiting"


def test_a_forked_child_sends_its_own_events_and_not_the_parents(fenv: FlagsEnv) -> None:
    with fenv.client(event_options=QUIET) as mp:
        mp.track("parent", company=ACME)
        mp.track("parent", company=ACME)  # buffered (and a worker thread running) at fork
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no buffer, no thread inherited; its own worker
            os.close(read)
            code = 1
            try:
                inherited = mp.event_stats.pending
                mp.track("child", company=ACME, quantity=5)
                ok = mp.flush(timeout=30) and mp.event_stats.sent == 1
                code = 0 if ok and inherited == 0 else 2
            finally:
                os.write(write, bytes([code]))
                os._exit(code)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == bytes([0])
        assert mp.event_stats.pending == 2  # the parent's are still the parent's
    assert mp.event_stats.sent == 2
    figures = fenv.metrics("companies", ACME)
    assert figures[("parent", "count")] == 2 and figures[("child", "sum")] == 5


class _SlowFirstAnswer:
    """A forwarding proxy in front of the real server that holds back its first answer
    (the server has stored the batch; the client times out and sends it again)."""

    def __init__(self, target: str, hold: float) -> None:
        self.forwarded = 0
        lock = threading.Lock()
        proxy = self
        upstream = httpx.Client(base_url=target, timeout=60)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = upstream.post(self.path, content=body, headers=headers)
                with lock:
                    proxy.forwarded += 1
                    first = proxy.forwarded == 1
                if first:
                    time.sleep(hold)
                try:
                    self.send_response(answer.status_code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                except OSError:
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._upstream = upstream
        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._upstream.close()


def test_a_batch_sent_again_after_a_lost_answer_counts_once(fenv: FlagsEnv) -> None:
    proxy = _SlowFirstAnswer(fenv.base_url, hold=3.0)
    try:
        with Millpond(
            fenv.key, proxy.url, environment=fenv.id, timeout=0.5, retry_policy=FAST
        ) as mp:
            for quantity in (1, 2, 3):
                mp.track("lost", company=ACME, quantity=quantity)
            assert mp.flush(timeout=60)
            stats = mp.event_stats
    finally:
        proxy.stop()
    assert proxy.forwarded >= 2  # the server got the batch twice (or more)
    assert (stats.sent, stats.duplicates) == (3, 3)  # the server had them: stored once
    figures = fenv.metrics("companies", ACME)
    assert figures[("lost", "count")] == 3 and figures[("lost", "sum")] == 6


def test_async_identify_track_flush_and_aclose(fenv: FlagsEnv) -> None:
    async def main() -> tuple[Any, Any]:
        async with fenv.async_client(event_options=QUIET) as amp:
            await amp.identify({"id": "u9"}, company={"keys": ACME}, name="async")
            await amp.track("async-call", company=ACME, user={"id": "u9"}, quantity=4)
            assert await amp.flush()
            flushed = amp.event_stats
            await amp.track("async-call", company=ACME)  # left for aclose to send
        return flushed, amp.event_stats

    flushed, closed = asyncio.run(main())
    assert (flushed.sent, flushed.pending) == (2, 0)
    assert (closed.sent, closed.pending, closed.dropped) == (3, 0, 0)
    figures = fenv.metrics("companies", ACME)
    assert figures[("async-call", "count")] == 2 and figures[("async-call", "sum")] == 5
    assert fenv.entity("users", {"id": "u9"})["name"] == "async"


def test_send_events_is_synchronous_and_idempotent(fenv: FlagsEnv) -> None:
    events = [TrackEvent(event="sync", company=ACME, quantity=2, idempotency_key="once")]
    with fenv.client() as mp:
        assert mp.send_events(events) == EventsAccepted(accepted=1, duplicates=0)
        assert mp.send_events(events) == EventsAccepted(accepted=0, duplicates=1)
        unkeyed = [TrackEvent(event="sync", company=ACME)]
        assert mp.send_events(unkeyed).accepted == 1
        assert unkeyed[0].idempotency_key is None  # given a key on a copy
        with pytest.raises(ValueError):
            mp.send_events([])
    assert fenv.metrics("companies", ACME)[("sync", "sum")] == 3


def test_an_unknown_environment_drops_the_batch_as_failed(
    fenv: FlagsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, "millpond.events"),
        Millpond(fenv.key, fenv.base_url, environment="no-such-env") as mp,
    ):
        mp.track("x", company=ACME)
        assert mp.flush() is False
        stats = mp.event_stats
    assert (stats.failed, stats.sent, stats.retries, stats.pending) == (1, 0, 0, 0)
    assert "1 events dropped, not retried" in caplog.text


def test_bad_arguments_raise_in_the_caller(fenv: FlagsEnv) -> None:
    with fenv.client() as mp:
        with pytest.raises(ValueError):
            mp.track("x", company=ACME, quantity=-1)
        with pytest.raises(ValueError):
            mp.identify({})
        with pytest.raises(ValueError):
            mp.track("", company=ACME)
        assert mp.event_stats.queued == 0


def test_a_client_can_be_garbage_collected(fenv: FlagsEnv) -> None:
    with httpx.Client() as http:
        mp = fenv.client(http_client=http, event_options=EventOptions(flush_interval=0.01))
        mp.track("gc", company=ACME)
        assert mp.flush()
        thread = mp._events._thread
        assert thread is not None and thread.is_alive()
        ref = weakref.ref(mp)
        del mp  # never closed: neither the worker thread nor the exit hook keeps it alive
        assert eventually(lambda: gc.collect() >= 0 and ref() is None)
        assert eventually(lambda: not thread.is_alive())  # and its thread ends


def test_flush_sends_from_the_caller_when_no_thread_can_start(
    fenv: FlagsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At interpreter exit Python refuses new threads: a flush then sends by itself."""

    class Refused(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(_event_workers.threading, "Thread", Refused)
    with fenv.client(event_options=QUIET) as mp:
        mp.track("inline", company=ACME, quantity=3)
        assert mp._events._thread is None
        assert mp.flush()
        assert mp.event_stats.sent == 1
    assert fenv.metrics("companies", ACME)[("inline", "sum")] == 3


# -- failures, from a fake server ------------------------------------------------------------


def test_a_retried_batch_carries_the_same_idempotency_keys(fake: FakeServer) -> None:
    fake.reply(Reply(503), Reply(503), Reply(200, {"accepted": 2, "duplicates": 0}))
    with Millpond(KEY, fake.url, environment="e1", retry_policy=FAST, max_retries=0) as mp:
        mp.track("a", company=ACME)
        mp.identify({"id": "u"})
        assert mp.flush()
        stats = mp.event_stats
    assert len(fake.requests) == 3
    assert fake.requests[0].path == "/v1/flags/environments/e1/events"
    bodies = [seen.json for seen in fake.requests]
    assert bodies[0] == bodies[1] == bodies[2]
    keys = [event["idempotency_key"] for event in bodies[0]["events"]]
    assert len(set(keys)) == 2 and all(keys)
    assert [e["event_type"] for e in bodies[0]["events"]] == ["track", "identify"]
    assert (stats.sent, stats.retries, stats.failed) == (2, 2, 0)


def test_timeouts_retry_the_same_batch(fake: FakeServer) -> None:
    """A timeout after the request was sent is retried: the batch is idempotent."""
    fake.reply(Reply(200, {"accepted": 1}, delay=2.0), Reply(200, {"accepted": 0, "duplicates": 1}))
    with Millpond(KEY, fake.url, environment="e1", retry_policy=FAST, timeout=0.3) as mp:
        mp.track("slow", company=ACME)
        assert mp.flush(timeout=30)
        assert mp.event_stats.duplicates == 1
    assert fake.count_requests(2) == 2
    assert fake.requests[0].json == fake.requests[1].json


def _error(status: int, code: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": code, "details": None}})


@pytest.mark.parametrize(
    ("reply", "retried"),
    [
        (_error(400, "bad"), False),
        (_error(401, "unauthorized"), False),
        (_error(409, "event_conflict"), True),  # the server's "send it again"
        (_error(409, "database_exists"), False),
        (_error(429, "rate_limited"), True),
    ],
)
def test_which_refusals_are_retried(fake: FakeServer, reply: Reply, retried: bool) -> None:
    fake.reply(reply, Reply(200, {"accepted": 1}))
    with Millpond(KEY, fake.url, environment="e1", retry_policy=FAST, max_retries=0) as mp:
        mp.track("x")
        assert mp.flush() is retried
        stats = mp.event_stats
    assert (stats.sent, stats.failed) == ((1, 0) if retried else (0, 1))
    assert len(fake.requests) == (2 if retried else 1)


def test_a_full_buffer_drops_the_oldest(fake: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    fake.reply(Reply(503))  # nothing gets through for now
    options = EventOptions(max_buffer=5, batch_size=2, flush_interval=0, warn_every=10)
    with (
        caplog.at_level(logging.WARNING, "millpond.events"),
        Millpond(
            KEY,
            fake.url,
            environment="e1",
            retry_policy=RetryPolicy(base=0.01, cap=0.05),
            max_retries=0,
            event_options=options,
        ) as mp,
    ):
        for i in range(20):
            mp.track(f"e{i}")
        stats = mp.event_stats
        assert stats.queued == 20 and stats.pending <= 5 + 2  # the buffer, and one batch
        assert stats.dropped == 20 - stats.pending >= 13
        warnings = [r for r in caplog.records if "event buffer full" in r.getMessage()]
        assert len(warnings) == 2  # the 1st drop and the 11th
        fake.reply(Reply(200, {"accepted": 2}))
        assert mp.flush(timeout=30)
        assert mp.event_stats.sent == 20 - stats.dropped
    delivered = {event["event"] for event in _sent(fake)}
    assert len(delivered) == 20 - stats.dropped
    assert {f"e{i}" for i in range(15, 20)} <= delivered  # the newest were kept


def test_offline_sends_nothing(fake: FakeServer) -> None:
    with Millpond(base_url=fake.url, offline=True) as mp:
        mp.identify({"id": "u"})
        mp.track("x", company=ACME)
        assert mp.flush()
        assert mp._events._thread is None  # no worker either
        stats = mp.event_stats
        with pytest.raises(ConfigurationError):
            mp.send_events([TrackEvent(event="x")])
    assert (stats.queued, stats.dropped, stats.sent) == (2, 2, 0)
    assert fake.requests == []


def test_flush_times_out_while_the_server_is_down(closed_port: int) -> None:
    options = EventOptions(close_timeout=0.2)
    policy = RetryPolicy(base=0.01, cap=0.05)
    mp = Millpond(
        KEY,
        f"http://127.0.0.1:{closed_port}",
        environment="e1",
        retry_policy=policy,
        max_retries=0,
        event_options=options,
    )
    mp.track("x")
    assert mp.flush(timeout=0.5) is False
    assert mp.event_stats.pending == 1 and mp.event_stats.retries >= 1
    mp.close()  # gives up after close_timeout: counted as dropped
    assert (mp.event_stats.dropped, mp.event_stats.pending) == (1, 0)


def test_async_retry_same_keys_and_offline(fake: FakeServer) -> None:
    fake.reply(Reply(502), Reply(200, {"accepted": 1}))

    async def main() -> None:
        async with AsyncMillpond(
            KEY, fake.url, environment="e1", retry_policy=FAST, max_retries=0
        ) as amp:
            await amp.track("a", company=ACME)
            assert await amp.flush()
            assert (amp.event_stats.sent, amp.event_stats.retries) == (1, 1)
        async with AsyncMillpond(base_url=fake.url, offline=True) as off:
            await off.track("b")
            assert off.event_stats.dropped == 1 and off._events._task is None

    asyncio.run(main())
    assert len(fake.requests) == 2 and fake.requests[0].json == fake.requests[1].json


def test_async_full_buffer_and_aclose_drops_what_cannot_be_sent(fake: FakeServer) -> None:
    fake.reply(Reply(503))
    options = EventOptions(max_buffer=3, batch_size=1, flush_interval=0, close_timeout=0.2)

    async def main() -> Any:
        amp = AsyncMillpond(
            KEY,
            fake.url,
            environment="e1",
            retry_policy=RetryPolicy(base=0.01, cap=0.05),
            max_retries=0,
            event_options=options,
        )
        for i in range(10):
            await amp.track(f"e{i}")
        before = amp.event_stats
        assert before.dropped == 10 - before.pending >= 6
        assert await amp.flush(timeout=0.3) is False
        await amp.aclose()
        return amp.event_stats

    stats = asyncio.run(main())
    assert stats.pending == 0 and stats.sent == 0 and stats.dropped == 10


# -- the queue on its own --------------------------------------------------------------------


def _queue(**options: Any) -> EventQueue:
    return EventQueue(EventOptions(**options), RetryPolicy(base=1.0, cap=4.0, jitter=False))


def _names(action: Send | Wait) -> list[str]:
    assert isinstance(action, Send)
    return [e.event for e in action.events if isinstance(e, TrackEvent)]


def test_queue_batches_by_size_interval_and_flush() -> None:
    q = _queue(batch_size=3, flush_interval=2.0)
    assert q.next_action(0.0) == Wait(None)
    for i in range(4):
        q.push(track_event(f"e{i}"), 0.0)
    assert _names(q.next_action(0.5)) == ["e0", "e1", "e2"]  # a full batch goes at once
    assert q.next_action(0.5) == Wait(None)  # one batch at a time
    q.sent(EventsAccepted(accepted=3))
    assert q.next_action(0.5) == Wait(1.5)  # e3 waits for company, up to the interval
    assert _names(q.next_action(2.0)) == ["e3"]
    q.sent(EventsAccepted(accepted=1))
    q.push(track_event("e4"), 3.0)
    mark = q.request_flush()
    q.push(track_event("e5"), 3.0)
    assert not q.settled(mark)
    assert _names(q.next_action(3.0)) == ["e4", "e5"]  # a flush does not wait
    q.sent(EventsAccepted(accepted=1, duplicates=1))
    assert q.settled(mark) and q.idle
    assert q.stats() == EventStats(queued=6, sent=6, duplicates=1)


def test_queue_retries_with_backoff_then_drops_refusals() -> None:
    q = _queue(batch_size=2, flush_interval=0.0)
    q.push(track_event("a"), 0.0)
    q.push(track_event("b"), 0.0)
    first = q.next_action(0.0)
    assert isinstance(first, Send)
    assert q.failed(ServerError(503, "unavailable", "later"), 10.0) == 1.0
    q.push(track_event("c"), 10.0)
    assert q.next_action(10.5) == Wait(0.5)  # the failed batch goes first, after its delay
    again = q.next_action(11.0)
    assert isinstance(again, Send) and again.events == first.events  # same events, same keys
    assert q.failed(TransportError("down"), 11.0) == 2.0  # backoff doubles
    assert isinstance(q.next_action(13.0), Send)
    assert q.failed(ConflictError(409, "event_conflict", "again"), 13.0) == 4.0
    assert isinstance(q.next_action(17.0), Send)
    assert q.failed(ConflictError(409, "other_conflict", "no"), 17.0) is None  # refused
    assert _names(q.next_action(17.0)) == ["c"]
    assert q.failed(BadRequestError(400, "bad", "no"), 17.0) is None
    q.push(track_event("d"), 18.0)
    assert isinstance(q.next_action(18.0), Send)
    assert q.failed(ConfigurationError("no environment"), 18.0) is None
    stats = q.stats()
    assert (stats.queued, stats.failed, stats.retries, stats.pending) == (4, 4, 3, 0)


def test_queue_bound_drops_the_oldest_and_warns_every_n(
    caplog: pytest.LogCaptureFixture,
) -> None:
    q = _queue(max_buffer=3, warn_every=2, flush_interval=0.0)
    with caplog.at_level(logging.WARNING, "millpond.events"):
        for i in range(8):
            q.push(track_event(f"e{i}"), 0.0)
    assert q.stats().dropped == 5
    assert _names(q.next_action(0.0)) == ["e5", "e6", "e7"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and "5 dropped so far" in warned[-1]  # drops 1, 3 and 5


def test_queue_close_drops_the_rest_and_later_events() -> None:
    q = _queue(flush_interval=60.0)
    q.push(track_event("a"), 0.0)
    q.push(track_event("b"), 0.0)
    assert q.close() == 2
    assert q.push(track_event("c"), 1.0) is False
    assert q.next_action(100.0) == Wait(None)
    assert q.stats().dropped == 3 and q.idle
    offline = EventQueue(EventOptions(), RetryPolicy(), offline=True)
    assert offline.push(track_event("x"), 0.0) is False and offline.idle


def test_options_are_checked() -> None:
    for bad in ({"max_buffer": 0}, {"batch_size": 1001}, {"flush_interval": -1}):
        with pytest.raises(ValueError):
            EventOptions(**bad)
