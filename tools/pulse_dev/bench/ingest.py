"""2. The ingest: the real handler's CPU cost per event, and DynamoDB writes per 1,000 MovieLens events."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.measure import BenchSizes, behaviour_texts
from pulse_dev.local.project import project_root

if TYPE_CHECKING:
    from pulse.catalog.version import CatalogReader
    from pulse.ingest.pipeline import Embedder
    from pulse.interest.model import UserInterest
    from pulse.interest.store import Result
    from pulse_dev.local.functions import Handler
    from pulse_dev.movielens import Rating


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
        from datetime import timedelta

        from pulse.interest.store import _to_item, dynamodb_item_bytes

        before = self.inner.writes
        result = self.inner.update(user_id, mutate, *args, **options)
        if self.inner.writes > before:
            size = dynamodb_item_bytes(_to_item(self.model, self.inner.items[user_id], time.time(),
                                                timedelta(days=180)).serialize())
            self.item_bytes.append(size)
            self.write_units += math.ceil(size / 1024)
        return result


def ingest_handler(pipeline: Any) -> Handler:
    """The real ingest function's handler, wired to `pipeline` (its DynamoDB store replaced by a fake)."""
    from pulse_dev.local.functions import import_handler

    os.environ.update({"POWERTOOLS_SERVICE_NAME": "pulse-ingest", "POWERTOOLS_METRICS_NAMESPACE": "Pulse",
                       "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
                       "POWERTOOLS_LOG_LEVEL": "WARNING"})
    make_handler: Any = import_handler(project_root() / "functions" / "ingest" / "app.py", "make_handler",
                                       "pulse_bench_ingest")
    handler: Handler = make_handler(lambda: pipeline)
    return handler


def lambda_batches(events: Sequence[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """Kinesis event source mapping invocations of `batch` records each, from one shard."""
    from pulse.events.stream import lambda_record

    records = [lambda_record(shard_id="shardId-000000000000", sequence_number=f"{number + 1:056d}",
                             partition_key=event["user_id"], data=json.dumps(event).encode(), arrival=time.time(),
                             stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/bench",
                             region="us-east-1", role_arn="arn:aws:iam::123456789012:role/bench")
               for number, event in enumerate(events)]
    return [{"Records": records[start:start + batch]} for start in range(0, len(records), batch)]


def bench_ingest(sizes: BenchSizes, batch: int, catalog: CatalogReader, encoder: Embedder) -> dict[str, Any]:
    from pulse.events.dead_letters import InMemoryDeadLetters
    from pulse.ingest.pipeline import IngestPipeline
    from pulse.settings import IngestSettings
    from pulse_dev.local.functions import LambdaContext
    from pulse_dev.movielens import load_ratings, rating_event

    ratings = load_ratings()
    texts = behaviour_texts(sizes.ingest_text_events)
    streams = {
        "item events (catalogue vectors)": [rating_event(r) for r in ratings[: sizes.ingest_item_events]],
        "text events (encoder)": [{"event_id": f"search-{n}", "user_id": f"u{n % 97}", "type": "search",
                                   "text": text, "ts": 1.7e9 + n} for n, text in enumerate(texts)],
    }
    context = LambdaContext("IngestFunction", 1769, 120)
    result: dict[str, Any] = {"batch": batch}
    for name, events in streams.items():
        pipeline = IngestPipeline(store=MeasuredStore(), load_embedder=lambda: encoder, catalog=catalog,
                                  dead_letters=InMemoryDeadLetters(), settings=IngestSettings())
        handler = ingest_handler(pipeline)
        warm_up = lambda_batches([{**events[0], "event_id": "warm-up", "user_id": "warm-up"}], 1)[0]
        handler(warm_up, context)  # imports, first encoder call
        invocations = lambda_batches(events, batch)
        cpu, wall = time.process_time(), time.perf_counter()
        for invocation in invocations:
            answer = handler(invocation, context)
            if answer.get("batchItemFailures"):
                raise RuntimeError(f"ingest benchmark: records failed: {answer['batchItemFailures'][:3]}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        count = len(events)
        result[name] = {"events": count, "events_per_cpu_second": round(count / cpu, 1),
                        "events_per_second": round(count / wall, 1)}
    result["dynamodb_writes"] = writes_per_thousand(ratings[: sizes.replay_events], catalog, encoder)
    return result


def writes_per_thousand(ratings: Sequence[Rating], catalog: CatalogReader, encoder: Embedder
                        ) -> list[dict[str, Any]]:
    """A realistic stream (MovieLens, time order): one conditional write per user per batch."""
    from pulse.events.dead_letters import InMemoryDeadLetters
    from pulse.events.stream import StreamRecord
    from pulse.ingest.pipeline import IngestPipeline
    from pulse.settings import IngestSettings
    from pulse_dev.movielens import rating_event

    rows = []
    events = [rating_event(r) for r in ratings]
    for batch in (1, 100, 500):
        store = MeasuredStore()
        pipeline = IngestPipeline(store=store, load_embedder=lambda: encoder, catalog=catalog,
                                  dead_letters=InMemoryDeadLetters(), settings=IngestSettings())
        for invocation in lambda_batches(events, batch):
            pipeline.process([StreamRecord.from_lambda(record) for record in invocation["Records"]])
        rows.append({"batch": batch, "events": len(events),
                     "writes_per_1000_events": round(store.writes * 1000 / len(events), 1),
                     "write_units_per_1000_events": round(store.write_units * 1000 / len(events), 1),
                     "mean_item_kb": round(float(np.mean(store.item_bytes)) / 1024, 2)})
    return rows
