"""Every Postgres cluster this server places databases on, by name.

The home cluster (``postgres.cluster.HOME``) is the one the server starts on; the others
are rows of the control database's ``clusters`` table, each with the URL of an admin
role. That URL holds a password, which cannot be hashed (the server must use it), so it
is **sealed**: AES-256-GCM under a key derived from the server secret, the cluster's name
as associated data (a sealed URL moved to another row does not open). Whoever has the
control database without the secret learns where the clusters are not.

Each replica loads the table at start and again when a database names a cluster it does
not know yet (one added on another replica): :meth:`Clusters.cluster_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..config import Settings
from ..errors import ServiceError
from ..postgres import provision
from ..postgres.cluster import HOME, Cluster
from ..postgres.supervisor import Supervisor
from ..store import Store

_log = logging.getLogger("millpond.clusters")
_KEY_LABEL = b"millpond cluster url v1"
_NONCE_BYTES = 12
_RETRY_BROKEN_S = 5.0


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def seal(secret: bytes, name: str, url: str) -> bytes:
    """``url`` encrypted for the ``clusters`` row named ``name``."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(_key(secret)).encrypt(nonce, url.encode(), name.encode())


def unseal(secret: bytes, name: str, sealed: bytes) -> str:
    """The URL :func:`seal` sealed; ``ValueError`` if it was not sealed with this secret
    for this name."""
    try:
        plain = AESGCM(_key(secret)).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], name.encode()
        )
    except InvalidTag:
        raise ValueError(f"the URL of cluster {name} was sealed with another secret") from None
    return plain.decode()


def unknown_cluster(name: str) -> ServiceError:
    return ServiceError(
        404,
        "cluster_not_found",
        f"no cluster named {name!r}: `millpond clusters list` shows them",
        {"cluster": name},
    )


class Clusters:
    def __init__(self, home: Cluster, store: Store, settings: Settings, secret: bytes) -> None:
        self.home = home
        self.store = store
        self.settings = settings
        self.secret = secret
        self._others: dict[str, Cluster] = {}
        self._supervisors: dict[str, Supervisor] = {}
        self._broken: dict[str, tuple[str, float]] = {}
        """Clusters whose URL could not be unsealed or that could not be reached at load:
        why, and when it was last tried (tried again after :data:`_RETRY_BROKEN_S`)."""
        self._lock = asyncio.Lock()

    def get(self, name: str) -> Cluster:
        """A cluster already loaded (the home one always is)."""
        if name == HOME:
            return self.home
        found = self._others.get(name)
        if found is None:
            raise unknown_cluster(name)
        return found

    async def cluster_of(self, name: str) -> Cluster:
        """The cluster ``name``, loading the table first if this replica does not know it
        yet; one that cannot be reached answers 503 ``postgres_unavailable``."""
        if name == HOME or name in self._others:
            return self.get(name)
        broken = self._broken.get(name)
        if broken is None or time.monotonic() - broken[1] > _RETRY_BROKEN_S:
            await self.load()  # a request for a cluster just found broken does not wait
        if name in self._broken:
            raise ServiceError(
                503,
                "postgres_unavailable",
                f"cluster {name} is unavailable ({self._broken[name][0]}); retry shortly",
                {"cluster": name},
            )
        return self.get(name)

    def loaded(self) -> list[Cluster]:
        return [self.home, *self._others.values()]

    async def load(self) -> None:
        """Bring the loaded clusters in line with the table: start the new ones (checked,
        with their replication role), forget the removed ones."""
        async with self._lock:
            rows = await self.store.fetchall(
                "SELECT id, url_sealed FROM clusters WHERE url_sealed IS NOT NULL"
            )
            named = {str(r["id"]): bytes(r["url_sealed"]) for r in rows}
            for name in [n for n in self._others if n not in named]:
                await self._forget(name)
            for name, sealed in named.items():
                broken = self._broken.get(name)
                recent = broken is not None and time.monotonic() - broken[1] <= _RETRY_BROKEN_S
                if name not in self._others and not recent:
                    await self._start(name, sealed)

    async def add(self, name: str, url: str) -> Cluster:
        """Start ``name`` at ``url`` (already checked and recorded) on this replica."""
        async with self._lock:
            await self._start(name, seal(self.secret, name, url))
            return self.get(name)

    async def forget(self, name: str) -> None:
        async with self._lock:
            await self._forget(name)

    async def _start(self, name: str, sealed: bytes) -> None:
        try:
            url = unseal(self.secret, name, sealed)
            cluster = Cluster(self.settings, name, url)
            await asyncio.to_thread(cluster.start)
            await asyncio.to_thread(provision.ensure_replication_role, cluster, self.secret)
        except Exception as exc:  # keep serving the other clusters
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _log.warning("cluster %s is unavailable: %s", name, reason)
            self._broken[name] = (reason, time.monotonic())
            return
        self._broken.pop(name, None)
        supervisor = Supervisor(cluster, self.settings, on_fatal=lambda reason: None)
        await supervisor.start()
        self._others[name] = cluster
        self._supervisors[name] = supervisor

    async def _forget(self, name: str) -> None:
        self._others.pop(name, None)
        self._broken.pop(name, None)
        supervisor = self._supervisors.pop(name, None)
        if supervisor is not None:
            with contextlib.suppress(Exception):
                await supervisor.stop()

    async def close(self) -> None:
        for name in list(self._others):
            await self._forget(name)


__all__ = ["Clusters", "seal", "unknown_cluster", "unseal"]
