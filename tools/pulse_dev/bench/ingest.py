"""2. The ingest: the real handler's CPU cost per event, and DynamoDB writes per 1,000 MovieLens events."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pulse_dev.bench.measure import BenchSizes, behaviour_texts
from pulse_dev.local.project import project_root
from pulse_dev.write_cost import MeasuredStore, lambda_batches

if TYPE_CHECKING:
    from pulse.catalog.version import CatalogReader
    from pulse.ingest.pipeline import Embedder
    from pulse_dev.local.functions import Handler
    from pulse_dev.movielens import Rating


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
    result["dynamodb_writes"] = writes_per_thousand(ratings[: sizes.replay_events], catalog, encoder, batch)
    return result


def writes_per_thousand(ratings: Sequence[Rating], catalog: CatalogReader, encoder: Embedder, batch: int
                        ) -> list[dict[str, Any]]:
    """A realistic stream (MovieLens, time order): one conditional write per user per batch; at batch 1 (every
    event another write, as fully interleaved users give), the deployed batch and 500."""
    from pulse_dev.movielens import rating_event
    from pulse_dev.write_cost import replay_write_cost

    events = [rating_event(r) for r in ratings]
    return [replay_write_cost(events, catalog, size, encoder) for size in sorted({1, batch, 500})]
