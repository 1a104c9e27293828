"""Pure engines: plain functions over plain data, no I/O, shared by the server and the
SDK (subscription predicates in :mod:`millpond.engine.predicates`)."""
