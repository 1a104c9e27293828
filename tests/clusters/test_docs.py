"""docs/clusters.md's commands, in order, as a server admin (every command there is
one's) against a server with two clusters, adding a third Postgres as ``pg2``; the same
runner as every other doc's (tests/test_docs_commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.test_docs_commands import OWN_TEST, doc_commands, run_doc

from millpond.server.postgres.embedded import EmbeddedPostgres

from .conftest import Env


def test_the_clusters_guide_has_its_own_test() -> None:
    assert OWN_TEST["clusters.md"] == "tests/clusters/test_docs.py"
    commands = [c for c, _ in doc_commands("clusters.md")]
    assert any(c.startswith("millpond clusters move") for c in commands)


def test_the_clusters_guides_commands_run(
    env: Env, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    third = EmbeddedPostgres(tmp_path_factory.mktemp("third-pg"))
    third.start()
    try:
        me = env("GET", "/v1/me").json()["user"]["username"]
        values = {"url": env.server.url}
        extra = {"NEW_CLUSTER_URL": third.url()}
        run_doc("clusters.md", env.server, me, env.key, tmp_path, values, extra)
        names = {c["name"] for c in env("GET", "/v1/clusters").json()}
        assert "pg2" not in names, "the guide ends by removing the cluster it added"
    finally:
        third.stop()
