"""Personal data in logs: a user id is written only as a pseudonymous reference.

The reference is a keyed hash (HMAC-SHA256, first 16 hex digits): stable, so the log lines of one user can be
correlated, and not reversible without the key. The key is a per-deployment secret: the template generates it in
Secrets Manager and names it in PULSE_LOG_KEY_SECRET; it is read once per container. Outside AWS an explicit
PULSE_LOG_HASH_KEY may stand in for it. There is no built-in key: with neither, or with a secret that cannot be
read, the function fails at its first invocation with an error that says so.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import lru_cache

from pulse import aws
from pulse.errors import PulseError

SECRET_VARIABLE = "PULSE_LOG_KEY_SECRET"
KEY_VARIABLE = "PULSE_LOG_HASH_KEY"
MIN_KEY_BYTES = 16


class LogKeyUnavailableError(PulseError, RuntimeError):
    """The log-reference key is not configured or cannot be read."""


def user_ref(user_id: str) -> str:
    return "u:" + hmac.new(log_key(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


def log_key() -> bytes:
    """The deployment's key (read once per container and per configuration)."""
    return _key(os.environ.get(SECRET_VARIABLE) or None, os.environ.get(KEY_VARIABLE) or None)


@lru_cache(maxsize=4)
def _key(secret_id: str | None, explicit: str | None) -> bytes:
    value: str
    if secret_id is not None:
        try:
            value = aws.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        except Exception as error:  # noqa: BLE001 - any failure: say which secret and why, and stop
            raise LogKeyUnavailableError(f"the log-reference key cannot be read from Secrets Manager "
                                         f"({SECRET_VARIABLE}={secret_id}): {type(error).__name__}: {error}") from error
        source = f"secret {secret_id}"
    elif explicit is not None:
        value, source = explicit, KEY_VARIABLE
    else:
        raise LogKeyUnavailableError(f"no log-reference key: set {SECRET_VARIABLE} (the template does) or, outside "
                                     f"AWS, {KEY_VARIABLE}; user ids are only ever logged as keyed references")
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise LogKeyUnavailableError(f"the log-reference key from {source} is {len(key)} bytes; at least "
                                f"{MIN_KEY_BYTES} are needed")
    return key
