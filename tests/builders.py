"""Builders for behaviour events and real-shaped Lambda events (events/*.json are generated from these)."""

from __future__ import annotations

import json
from typing import Any

from pulse.events.stream import lambda_record

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/pulse-event-stream"
SHARD = "shardId-000000000000"
BASE_SEQUENCE = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000


# The user ids the running test built events for: tests/conftest.py fails a test whose log lines at INFO and
# above hold one of them in clear text.
USED_USER_IDS: set[str] = set()


def behaviour(event_id: str, user_id: str, *, type: str = "view", ts: float | str = 1_700_000_000,  # noqa: A002
              item_id: str | None = None, text: str | None = None, value: float | None = None,
              **extra: Any) -> dict[str, Any]:
    if isinstance(user_id, str):
        USED_USER_IDS.add(user_id)
    event: dict[str, Any] = {"event_id": event_id, "user_id": user_id, "type": type, "ts": ts}
    for key, field_value in (("item_id", item_id), ("text", text), ("value", value)):
        if field_value is not None:
            event[key] = field_value
    event.update(extra)
    return event


def kinesis_record(data: bytes | str | dict[str, Any] | list[Any], sequence: int, *, partition_key: str | None = None,
                   shard: str = SHARD, arrival: float = 1_700_000_100.0) -> dict[str, Any]:
    if isinstance(data, dict | list):
        if isinstance(data, dict):
            partition_key = partition_key or str(data.get("user_id", "unknown"))
        data = json.dumps(data)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return lambda_record(shard_id=shard, sequence_number=str(BASE_SEQUENCE + sequence),
                         partition_key=partition_key or "unknown", data=raw, arrival=arrival, stream_arn=STREAM_ARN,
                         region="us-east-1", role_arn="arn:aws:iam::123456789012:role/pulse-ingest-role")


def kinesis_event(payloads: list[Any], *, first_sequence: int = 1) -> dict[str, Any]:
    return {"Records": [kinesis_record(payload, first_sequence + offset)
                        for offset, payload in enumerate(payloads)]}


def sequence_number(sequence: int) -> str:
    return str(BASE_SEQUENCE + sequence)


def http_event(method: str, path: str, query: str = "", body: Any = None, **fixed: Any) -> dict[str, Any]:
    """An API Gateway HTTP API (v2) event, as API Gateway would send it for this request."""
    from pulse_dev.local.http import api_gateway_event

    if body is not None and not isinstance(body, str | bytes):
        body = json.dumps(body)
    return api_gateway_event(method, path, query=query, body=body,
                             headers={"content-type": "application/json", "host": "api.local"}, **fixed)


def s3_put_event(bucket: str, key: str) -> dict[str, Any]:
    """An S3 ObjectCreated notification for one object."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-23T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "catalog-upload",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": 1024, "sequencer": "0055AED6DCD90281E5"}},
    }]}
