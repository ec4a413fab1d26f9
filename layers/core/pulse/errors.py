"""The root of every error Pulse raises on purpose, so a caller can tell Pulse's own refusals and outages from bugs.

Each error also keeps the builtin base its callers already catch: ValueError for input Pulse refuses (an event,
a catalogue, a setting), RuntimeError for a dependency that failed (the store, the catalogue, the key), LookupError
and PermissionError for the API's 404 and 401/403. The encoder layer's two errors (`pulse_encoder`) stay outside:
that package does not depend on this one.
"""


class PulseError(Exception):
    """Base of every error Pulse raises on purpose."""
