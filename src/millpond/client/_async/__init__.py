"""The client modules. ``client/_async`` is written by hand; ``client/_sync`` is generated
from it by ``scripts/async_to_sync.py`` (run it after changing ``_async``)."""
