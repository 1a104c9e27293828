""":class:`FlypperStorage`: flypper's storage interface on millpond flags, so flypper's own
``Client``, ``Context`` and ``FlypperWebUI`` run on the flags millpond's SDK, CLI and
console see (the mapping: :mod:`millpond.flags._flypper`)::

    from flypper.client import Client
    from millpond import Millpond
    from millpond.flags import FlypperStorage

    storage = FlypperStorage(Millpond(api_key=key))   # a key bound to an environment
    client = Client(storage=storage, ttl=10)          # polls by version, as with any storage

Needs the ``flypper`` package (0.1.7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flypper.entities.flag import Flag, FlagData, UnversionedFlagData
from flypper.storage.abstract import AbstractStorage

from ._flypper import FlypperFlags

if TYPE_CHECKING:
    from ..client import Millpond


class FlypperStorage(AbstractStorage):
    """flypper's storage on a millpond environment, through ``client`` (a
    :class:`~millpond.Millpond` whose key reaches the environment: bound to it, or an
    account key with ``environment=``; write scope to change flags).

    - ``list()`` lists every flag, soft-deleted ones included (what the web UI shows);
      ``list(version__gt=n)`` only those changed after environment version ``n`` (the
      client's delta sync). In a delta, a deleted flag comes twice — a disabled copy, then
      the deletion — because flypper's ``Client`` ``del``s every deleted flag from its
      cache and fails on one it never had (a flag created and deleted between two syncs,
      or any deleted flag at a client's first sync).
    - ``upsert()`` writes at once (the server commits each change) and returns the flag
      with its new version; ``delete()`` removes a flag for good (soft-deleting it first if
      live, so polling clients see it go); ``commit()`` has nothing left to do.
    """

    def __init__(self, client: Millpond) -> None:
        self.client = client
        self._flags = FlypperFlags(client)

    def list(self, version__gt: int | None = None) -> list[Flag]:
        found = self._flags.read(version__gt or 0)
        if version__gt is None:
            return [_flag(data) for data in found]
        delta = []
        for data in found:
            if data["deleted"]:
                delta.append(_flag({**data, "deleted": False, "enabled": False}))
            delta.append(_flag(data))
        return delta

    def upsert(self, flag_data: UnversionedFlagData) -> Flag:
        return _flag(self._flags.write(cast(dict[str, Any], flag_data))[0])

    def delete(self, flag_name: str) -> None:
        self._flags.remove(flag_name)

    def commit(self) -> None:
        """Each upsert and delete is committed by the server before it returns."""


def _flag(data: dict[str, Any]) -> Flag:
    return Flag(data=cast(FlagData, data))
