"""SpacetimeDB 0.7's client protocol (the ``spacetimedb-sdk`` 0.7 Python SDK's): the
WebSocket at ``/database/subscribe/{owner}/{name}`` (``router``), translated to and from
millpond's realtime protocol (``translate``, values in ``sats``). Bindings in the 0.7
layout: ``millpond generate --lang spacetimedb-python`` (``millpond.codegen.spacetimedb``)."""
