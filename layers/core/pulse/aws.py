"""boto3 clients, created lazily (never at import time) so tests and the local stack can point them anywhere.

The endpoint comes from the standard AWS_ENDPOINT_URL variable: there are no local-mode branches.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from pulse.container import on_reset

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5, read_timeout=20)


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=CLIENT_CONFIG)


@on_reset
def reset_clients() -> None:
    """Forget cached clients: the next ones follow the environment (AWS_ENDPOINT_URL, region) again."""
    client.cache_clear()
