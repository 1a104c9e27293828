"""Implementation of :mod:`millpond.engine.predicates` (import from there)."""
