"""``fork()`` with a client in use: the child gets HTTP connections of its own, so parent
and child never read each other's answers from a shared kept-alive socket."""

from __future__ import annotations

import os
import threading

from millpond import Millpond


def test_parent_and_child_keep_their_own_connections(base_url: str, admin_key: str) -> None:
    mp = Millpond(api_key=admin_key, base_url=base_url)
    try:
        parent_http = mp._transport._http
        assert mp.me().user.username == "admin"  # a kept-alive connection now exists
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fresh = mp._transport._http is not parent_http
                names = {mp.me().user.username for _ in range(50)}
                code = 0 if fresh and names == {"admin"} else 2
            finally:
                os.write(write, bytes([code]))
                os._exit(code)
        os.close(write)
        answers: list[str] = []
        worker = threading.Thread(
            target=lambda: answers.extend(str(mp.health().status) for _ in range(50))
        )
        worker.start()
        child = os.read(read, 1)
        worker.join()
        os.close(read)
        os.waitpid(pid, 0)
        assert child == bytes([0])
        assert answers == ["ok"] * 50
        assert mp._transport._http is parent_http
    finally:
        mp.close()
