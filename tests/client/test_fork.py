"""``fork()`` with a client in use: the child gets HTTP connections of its own, so parent
and child never read each other's answers from a shared kept-alive socket."""

from __future__ import annotations

import threading

from conftest import in_forked_child
from millpond import Millpond


def test_parent_and_child_keep_their_own_connections(base_url: str, admin_key: str) -> None:
    mp = Millpond(api_key=admin_key, base_url=base_url)
    try:
        parent_http = mp._transport._http
        assert mp.me().user.username == "admin"  # a kept-alive connection now exists
        answers: list[str] = []
        worker = threading.Thread(
            target=lambda: answers.extend(str(mp.health().status) for _ in range(50))
        )

        def child() -> bool:
            fresh = mp._transport._http is not parent_http
            return fresh and {mp.me().user.username for _ in range(50)} == {"admin"}

        worker.start()
        assert in_forked_child(child)
        worker.join()
        assert answers == ["ok"] * 50
        assert mp._transport._http is parent_http
    finally:
        mp.close()
