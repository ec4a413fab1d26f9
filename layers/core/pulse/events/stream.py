"""Kinesis records as the ingest pipeline sees them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a record sits in its shard: what the per-shard watermark and the redelivery check compare."""

    shard_id: str
    sequence_number: str


@dataclass(frozen=True, slots=True)
class StreamRecord:
    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival_ts: float | None = None
    event_source_arn: str | None = None

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.shard_id, self.sequence_number)

    @classmethod
    def from_lambda(cls, record: dict[str, Any]) -> StreamRecord:
        """One record of a Kinesis event source mapping's event; `data` is base64 there."""
        kinesis = record["kinesis"]
        raw = kinesis.get("data") or ""
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            data = raw.encode("utf-8", "surrogatepass")  # validation reports it as not JSON
        return cls(
            shard_id=record.get("eventID", "").split(":", 1)[0] or "shardId-unknown",
            sequence_number=str(kinesis["sequenceNumber"]),
            partition_key=str(kinesis.get("partitionKey", "")),
            data=data,
            arrival_ts=kinesis.get("approximateArrivalTimestamp"),
            event_source_arn=record.get("eventSourceARN"),
        )


def lambda_record(*, shard_id: str, sequence_number: str, partition_key: str, data: bytes, arrival: float,
                  stream_arn: str, region: str, role_arn: str) -> dict[str, Any]:
    """A record as a Kinesis event source mapping hands it to the function (the inverse of from_lambda)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": role_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }
