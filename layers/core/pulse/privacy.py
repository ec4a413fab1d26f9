"""Personal data in logs: a user id is written only as a pseudonymous reference.

The reference is a keyed hash (HMAC-SHA256, first 16 hex digits): stable, so the log lines of one user can be
correlated, and not reversible without the key. Set PULSE_LOG_HASH_KEY (e.g. from Secrets Manager) so that
nobody can test guesses against the logs; without it a fixed key is used.
"""

from __future__ import annotations

import hashlib
import hmac
import os

DEFAULT_KEY = "pulse-log-reference"


def user_ref(user_id: str) -> str:
    key = os.environ.get("PULSE_LOG_HASH_KEY") or DEFAULT_KEY
    return "u:" + hmac.new(key.encode(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
