"""`pulse demo`: the write path end to end on the embedded local stack, with a summary a person can read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pulse.interest import blend, decay_to
from pulse.local.sample import behaviour_stream, candidate_texts
from pulse.local.stack import LocalStack
from pulse.settings import Settings
from pulse.store import DynamoInterestStore


def put_records(kinesis: Any, stream: str, records: list[tuple[str, bytes]], progress: Any) -> None:
    for start in range(0, len(records), 500):
        chunk = records[start:start + 500]
        pending = [{"PartitionKey": key, "Data": data} for key, data in chunk]
        while pending:  # PutRecords is not atomic: re-put only what failed
            response = kinesis.put_records(StreamName=stream, Records=pending)
            pending = [entry for entry, result in zip(pending, response["Records"], strict=True)
                       if "ErrorCode" in result]
        progress.update(len(chunk))


def run_demo(port: int, out: Path, users: int = 40) -> dict[str, Any]:
    from tqdm import tqdm

    stack = LocalStack(port=port).start()
    try:
        names = stack.describe()
        records = behaviour_stream(users=users)
        kinesis = stack.client("kinesis")
        with tqdm(total=len(records), desc="PutRecords -> Kinesis", unit="rec") as progress:
            put_records(kinesis, names["stream"], records, progress)
        (poller,) = stack.stream_pollers(log_level="ERROR")  # the summary below says what happened
        started = time.perf_counter()
        with tqdm(total=len(records), desc="ingest (real handler)", unit="rec") as progress:
            while progress.n < len(records):
                delivered = poller.poll_once()
                progress.update(delivered)
                if delivered == 0 and not any(poller._pending.values()):
                    break
        elapsed = time.perf_counter() - started
        summary = summarize(stack, names, users, len(records), elapsed, poller.stats.invocations)
    finally:
        stack.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return summary


def summarize(stack: LocalStack, names: dict[str, str], users: int, records: int, elapsed: float,
              invocations: int) -> dict[str, Any]:
    from pulse_encoder import load_encoder

    config = Settings.from_env()
    store = DynamoInterestStore(names["table"], ttl_days=config.ttl_days)
    titles, texts = zip(*candidate_texts(), strict=True)
    candidates = load_encoder().encode(list(texts))
    sqs = stack.client("sqs")
    parked = int(sqs.get_queue_attributes(QueueUrl=names["dlq"], AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"])
    people = []
    for user_id in [f"u{index:03d}" for index in range(min(users, 4))]:
        user = store.get(user_id)
        if user is None:
            continue
        now = user.last_event_ts or 0.0
        vectors = {name: decay_to(state, now, config.half_lives[name]) for name, state in user.scales.items()}
        interest = blend(vectors, config.blend_weights)
        closest = np.argsort(-(candidates @ interest.astype(np.float32)))[:3]
        recent = sorted(user.recent_items.items(), key=lambda pair: pair[1], reverse=True)[:3]
        people.append({
            "user_id": user_id, "events": user.event_count,
            "strength": {name: round(float(np.linalg.norm(vector)), 3) for name, vector in vectors.items()},
            "recently": [item for item, _ in recent],
            "closest_titles": [titles[index] for index in closest],
        })
    total_events = sum(u.event_count for u in map(store.get, [f"u{i:03d}" for i in range(users)]) if u)
    return {"records_put": records, "events_applied": total_events, "dead_letters": parked,
            "invocations": invocations, "ingest_seconds": round(elapsed, 2),
            "records_per_second": round(records / elapsed, 1) if elapsed else None, "users": people}


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{summary['records_put']} records -> {summary['events_applied']} events applied exactly once, "
          f"{summary['dead_letters']} parked in the DLQ, {summary['invocations']} invocations, "
          f"{summary['records_per_second']} records/s")
    for person in summary["users"]:
        print(f"\nuser {person['user_id']}: {person['events']} events, strength {person['strength']}")
        print(f"  recently:        {', '.join(person['recently'])}")
        print(f"  interest is near: {', '.join(person['closest_titles'])}")
