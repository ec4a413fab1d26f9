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


@cache
def s3_for_checked_reads() -> Any:
    """S3 for reads whose integrity the reader checks itself (a catalogue's files against the sha256 table of its
    manifest; the manifest and the CURRENT pointer parsed and checked field by field): botocore's own CRC32 pass
    over every response body is skipped (~50 ms of the API's cold start at 100k items)."""
    try:
        unchecked = Config(response_checksum_validation="when_required")
    except TypeError:  # a botocore older than 1.36 validates no response checksums anyway
        unchecked = Config()
    return boto3.session.Session().client("s3", config=CLIENT_CONFIG.merge(unchecked))


@on_reset
def reset_clients() -> None:
    """Forget cached clients: the next ones follow the environment (AWS_ENDPOINT_URL, region) again."""
    client.cache_clear()
    s3_for_checked_reads.cache_clear()
