"""Implementation of :mod:`millpond.engine.flags` (import from there)."""
