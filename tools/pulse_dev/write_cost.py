"""What a stream costs in DynamoDB: events replayed through the real ingest pipeline into an in-memory store that
sizes every write by DynamoDB's rules (item bytes, write units). `make bench` reports it; a unit test holds the
MovieLens replay to 2 write units a write. No side effects on import (unlike pulse_dev.bench, which pins threads).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pulse.catalog.version import CatalogReader
    from pulse.ingest.pipeline import Embedder
    from pulse.interest.model import UserInterest
    from pulse.interest.store import Result


class MeasuredStore:
    """The in-memory store, also counting the write units each write would cost in DynamoDB."""

    def __init__(self) -> None:
        from pulse.interest.store import InMemoryInterestStore, user_interest_model

        self.inner = InMemoryInterestStore()
        self.model = user_interest_model("pulse-bench")
        self.write_units = 0
        self.item_bytes: list[int] = []

    def get(self, user_id: str) -> UserInterest | None:
        return self.inner.get(user_id)

    def delete(self, user_id: str) -> bool:
        return self.inner.delete(user_id)

    @property
    def writes(self) -> int:
        return self.inner.writes

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserInterest]:
        return self.inner.get_many(user_ids)

    def update(self, user_id: str, mutate: Callable[[UserInterest], Result], *args: Any, **options: Any) -> Result:
        from pulse.interest.store import _to_item, dynamodb_item_bytes

        before = self.inner.writes
        result = self.inner.update(user_id, mutate, *args, **options)
        if self.inner.writes > before:
            size = dynamodb_item_bytes(_to_item(self.model, self.inner.items[user_id], time.time(),
                                                timedelta(days=180)).serialize())
            self.item_bytes.append(size)
            self.write_units += math.ceil(size / 1024)
        return result


def lambda_batches(events: Sequence[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """Kinesis event source mapping invocations of `batch` records each, from one shard."""
    from pulse.events.stream import lambda_record

    records = [lambda_record(shard_id="shardId-000000000000", sequence_number=f"{number + 1:056d}",
                             partition_key=event["user_id"], data=json.dumps(event).encode(), arrival=time.time(),
                             stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/bench",
                             region="us-east-1", role_arn="arn:aws:iam::123456789012:role/bench")
               for number, event in enumerate(events)]
    return [{"Records": records[start:start + batch]} for start in range(0, len(records), batch)]


def replay_write_cost(events: Sequence[dict[str, Any]], catalog: CatalogReader, batch: int,
                      encoder: Embedder | None = None, **settings: Any) -> dict[str, Any]:
    """Replay `events` in Lambda batches of `batch` records (the template's default settings, or `settings` by
    their variable names: PULSE_DEDUP_WINDOW=64); writes, write units per 1,000 events and the item sizes."""
    from pulse.events.dead_letters import InMemoryDeadLetters
    from pulse.events.stream import StreamRecord
    from pulse.ingest.pipeline import IngestPipeline
    from pulse.settings import IngestSettings

    def load_embedder() -> Embedder:
        if encoder is None:
            raise RuntimeError("this replay has text events: pass an encoder")
        return encoder

    store = MeasuredStore()
    pipeline = IngestPipeline(store=store, load_embedder=load_embedder, catalog=catalog,
                              dead_letters=InMemoryDeadLetters(), settings=IngestSettings(**settings))
    for invocation in lambda_batches(events, batch):
        pipeline.process([StreamRecord.from_lambda(record) for record in invocation["Records"]])
    return {"batch": batch, "events": len(events), "writes": store.writes,
            "writes_per_1000_events": round(store.writes * 1000 / len(events), 1),
            "write_units_per_1000_events": round(store.write_units * 1000 / len(events), 1),
            "write_units_per_write": round(store.write_units / max(1, store.writes), 2),
            "mean_item_kb": round(float(np.mean(store.item_bytes)) / 1024, 2),
            "max_item_kb": round(max(store.item_bytes) / 1024, 2)}
