"""Pulse: real-time interest capture for recommendations (the domain package shared by all functions).

Only what the four handlers in functions/ import lives here; docs/architecture.md describes the flows, the
contracts, the interest model and where each module sits."""

__version__ = "0.1.0"
