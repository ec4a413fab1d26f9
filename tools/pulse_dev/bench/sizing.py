"""7. Sizing and cost: what a deployment needs and pays, from this run's own measurements and AWS list prices.

Pure arithmetic over the report (`sizing(report)`): no AWS call, nothing measured here. Every price is in PRICES,
with where it comes from; every throughput and latency comes from the same `make bench` run.
"""

from __future__ import annotations

import math
from typing import Any

# AWS list prices, us-east-1, x86, on-demand, no free tier. From the services' pricing pages
# (aws.amazon.com/lambda/pricing, /kinesis/data-streams/pricing, /dynamodb/pricing/on-demand, /api-gateway/pricing,
# /s3/pricing); written down 2026-12-01. DynamoDB's on-demand rates are those after its November 2024 price cut.
# Check the pages before budgeting: prices change, and other Regions differ.
PRICES_DATE = "2026-12-01"
PRICES: dict[str, float] = {
    "lambda_gb_second": 0.0000166667,
    "lambda_request": 0.20 / 1e6,
    "kinesis_shard_hour": 0.015,  # provisioned mode: 1 MB/s or 1,000 records/s in, per shard
    "kinesis_put_unit": 0.014 / 1e6,  # per 25 KB PUT payload unit (one event is one)
    "dynamodb_write_unit": 0.625 / 1e6,  # write request unit: 1 KB of the item written
    "dynamodb_read_unit": 0.125 / 1e6,  # read request unit: 4 KB strongly consistent
    "http_api_request": 1.00 / 1e6,  # API Gateway HTTP API, first 300 million a month
    "firehose_gb": 0.029,  # Data Firehose (the archive), per GB ingested, each record rounded up to 5 KB
    "s3_get": 0.0004 / 1e3,
}
FIREHOSE_RECORD_BYTES = 5 * 1024  # what Firehose bills a record of up to 5 KB as
# Lambda bills the duration, not the CPU: the ingest also waits for DynamoDB (single-digit ms on AWS; 5 ms taken
# here), its writes PULSE_WRITE_CONCURRENCY (8) at a time, and one BatchGetItem per batch.
DYNAMODB_MS = 5.0
WRITE_CONCURRENCY = 8
SECONDS_PER_MONTH = 730 * 3600
KINESIS_RECORDS_PER_SHARD = 1000  # records/s in per shard
MAX_PARALLELIZATION_FACTOR = 10  # concurrent batches per shard for one event source mapping
LAMBDA_MAX_MEMORY_MB = 10_240
LAMBDA_DEFAULT_CONCURRENCY = 1000  # per account and Region, raisable
API_LATENCY_BUDGET_MS = 100  # what a synchronous recommendations call can spend on scoring, by our choice
RUNTIME_OVERHEAD_MB = 350  # the API function's Python, NumPy, Powertools and pydantic, measured resident
# The API holds a version's int8 codes and scales in memory (dim + 4 bytes an item) and maps its float32 rows from
# /tmp. While a version loads, the codes' S3 body and the array read from it are both alive, and while it replaces
# another the old one still serves: up to 3 copies of the codes in memory and 2 row files on disk. Ids, index and
# titles cost ~250 bytes of Python objects an item.
SCAN_COPIES_AT_PEAK = 3
ROW_FILES_AT_PEAK = 2
OBJECT_BYTES_PER_ITEM = 250
LAMBDA_MAX_EPHEMERAL_MB = 10_240
EVENT_RATES = (1_000, 10_000, 100_000)
CATALOGUE_SIZES = (1_000_000, 10_000_000, 100_000_000)


def vcpu_gb(memory_mb: float) -> float:
    return memory_mb / 1024


def sizing(report: dict[str, Any], *, text_share: float = 0.1, ingest_memory_mb: int = 1769,
           api_memory_mb: int = 1769, dim: int = 384) -> dict[str, Any]:
    """Cost per million events and recommendation requests, and the resources 1k-100k events/s and 1M-100M
    items take. `text_share`: the share of events that carry a text (searches) and go through the encoder."""
    ingest = report["ingest"]
    item_rate = ingest["item events (catalogue vectors)"]["events_per_cpu_second"]
    text_rate = ingest["text events (encoder)"]["events_per_cpu_second"]
    rows = {row["batch"]: row for row in ingest["dynamodb_writes"]}
    cpu_per_event = (1 - text_share) / item_rate + text_share / text_rate
    # Sessions (MovieLens: a user's events arrive together, 37.5 writes per 1,000 events at batch 100) against
    # fully interleaved users (every event another user's: one write per event, the batch-1 row).
    traffic = {"sessions": rows[ingest["batch"]], "interleaved": rows[1]}
    per_event = {name: event_cost(cpu_per_event, row, ingest["batch"], ingest_memory_mb)
                 for name, row in traffic.items()}
    sessions = per_event["sessions"]
    events = {
        "text_share": text_share, "cpu_ms_per_event": round(cpu_per_event * 1000, 4),
        "write_units_per_event": {name: row["write_units_per_1000_events"] / 1000 for name, row in traffic.items()},
        "usd_per_million_events": {name: {key: round(value * 1e6, 3) for key, value in cost.items()}
                                   | {"total (without shard-hours)": round(sum(cost.values()) * 1e6, 3)}
                                   for name, cost in per_event.items()},
        "rates": [event_rate(rate, cpu_per_event, sum(sessions.values()),
                             {name: row["write_units_per_1000_events"] / 1000 for name, row in traffic.items()})
                  for rate in EVENT_RATES],
    }
    api = report["api"]
    largest = max(report["topk"], key=lambda row: row["items"])  # scoring time grows with the items read
    per_item_ms = (largest.get("int8") or largest)["p50_ms"] / largest["items"]  # the API's path: the int8 scan
    base_ms = max(0.0, api["p50_ms"] - per_item_ms * api["items"])
    requests = {
        "handler_ms_without_scoring": round(base_ms, 2),
        "catalogues": [catalogue_size(items, dim, base_ms, per_item_ms, api_memory_mb) for items in CATALOGUE_SIZES],
    }
    return {"prices_date": PRICES_DATE, "prices": PRICES, "events": events, "requests": requests}


def event_cost(cpu_per_event: float, writes: dict[str, Any], batch: int, memory_mb: int) -> dict[str, float]:
    """Dollars per event: the ingest's billed duration, DynamoDB writes and reads, the Kinesis put, the archive."""
    writes_per_event = writes["writes_per_1000_events"] / 1000
    waiting = (writes_per_event * DYNAMODB_MS / WRITE_CONCURRENCY + DYNAMODB_MS * 2 / batch) / 1000
    reads = writes_per_event * math.ceil(writes["mean_item_kb"] / 4)  # one consistent read per user written
    return {
        "lambda": (cpu_per_event + waiting) * vcpu_gb(memory_mb) * PRICES["lambda_gb_second"]
        + PRICES["lambda_request"] / batch,
        "dynamodb": writes["write_units_per_1000_events"] / 1000 * PRICES["dynamodb_write_unit"]
        + reads * PRICES["dynamodb_read_unit"],
        "kinesis_puts": PRICES["kinesis_put_unit"],
        "archive": FIREHOSE_RECORD_BYTES / 1024**3 * PRICES["firehose_gb"],
    }


def event_rate(rate: int, cpu_per_event: float, usd_per_event: float, write_units: dict[str, float]
               ) -> dict[str, Any]:
    shards = math.ceil(rate / KINESIS_RECORDS_PER_SHARD)
    vcpus = rate * cpu_per_event
    factor = max(1, math.ceil(vcpus / shards))  # one batch per shard at a time uses one vCPU at most
    monthly = usd_per_event * rate * SECONDS_PER_MONTH + shards * 730 * PRICES["kinesis_shard_hour"]
    takes_over = None
    if factor > MAX_PARALLELIZATION_FACTOR:
        takes_over = "more shards than the records need (the encoder's CPU, not Kinesis, limits a shard)"
    elif shards * factor > LAMBDA_DEFAULT_CONCURRENCY:
        takes_over = "a raised Lambda concurrency quota"
    return {"events_per_s": rate, "shards": shards, "vcpus_busy": round(vcpus, 1), "parallelization_factor": factor,
            "ingest_concurrency": shards * factor,
            "dynamodb_write_units_per_s": {name: round(rate * units) for name, units in write_units.items()},
            "usd_per_month": round(monthly), "needs": takes_over}


def catalogue_size(items: int, dim: int, base_ms: float, per_item_ms: float, memory_mb: int) -> dict[str, Any]:
    scan_mb, rows_mb = items * (dim + 4) / 1e6, items * dim * 4 / 1e6
    memory_needed = SCAN_COPIES_AT_PEAK * scan_mb + items * OBJECT_BYTES_PER_ITEM / 1e6 + RUNTIME_OVERHEAD_MB
    disk_needed = ROW_FILES_AT_PEAK * rows_mb
    scoring_ms = items * per_item_ms
    request_ms = base_ms + scoring_ms
    fits = memory_needed <= LAMBDA_MAX_MEMORY_MB and disk_needed <= LAMBDA_MAX_EPHEMERAL_MB
    memory = max(memory_mb, math.ceil(memory_needed / 64) * 64) if fits else LAMBDA_MAX_MEMORY_MB
    per_request = (request_ms / 1000 * vcpu_gb(memory) * PRICES["lambda_gb_second"] + PRICES["lambda_request"]
                   + PRICES["http_api_request"] + PRICES["dynamodb_read_unit"])
    if not fits:
        shards = math.ceil(max((memory_needed - RUNTIME_OVERHEAD_MB) / (LAMBDA_MAX_MEMORY_MB - RUNTIME_OVERHEAD_MB),
                               disk_needed / LAMBDA_MAX_EPHEMERAL_MB))
        verdict = (f"past one Lambda's 10 GB of memory or of /tmp: shard the catalogue over {shards}+ functions "
                   "(scatter-gather) or serve it from an approximate nearest-neighbour index (Amazon OpenSearch "
                   "Service k-NN)")
    elif scoring_ms > API_LATENCY_BUDGET_MS:
        verdict = (f"fits in memory but the scan takes {scoring_ms:.0f} ms: shard it over functions in "
                   "parallel, or an approximate index (Amazon OpenSearch Service k-NN)")
    else:
        verdict = "one Lambda"
    return {"items": items, "scan_mb": round(scan_mb), "rows_on_disk_mb": round(disk_needed),
            "memory_mb": memory if fits else None, "p50_ms": round(request_ms, 1),
            "usd_per_million_requests": round(per_request * 1e6, 2), "verdict": verdict}


def format_sizing(result: dict[str, Any]) -> list[str]:
    events = result["events"]
    lines = ["", f"sizing and cost (AWS list prices us-east-1 of {result['prices_date']}, "
                 f"{events['text_share']:.0%} of events with a text; bench/sizing.py)"]
    for name, costs in events["usd_per_million_events"].items():
        lines.append(f"  per million events, {name}: " + ", ".join(f"{key} ${value}" for key, value in costs.items()))
    lines.append("    events/s   shards   vCPUs busy   parallelization   ingest concurrency   WRU/s sessions"
                 "   WRU/s interleaved   $/month (sessions)")
    for row in events["rates"]:
        units = row["dynamodb_write_units_per_s"]
        lines.append(f"  {row['events_per_s']:>10} {row['shards']:>8} {row['vcpus_busy']:>12} "
                     f"{row['parallelization_factor']:>17} {row['ingest_concurrency']:>20} "
                     f"{units['sessions']:>16} {units['interleaved']:>19} {row['usd_per_month']:>20}"
                     + (f"  needs {row['needs']}" if row["needs"] else ""))
    lines.append("       items   int8 scan MB   memory MB   /tmp MB   p50 ms   $/million requests   verdict")
    for row in result["requests"]["catalogues"]:
        lines.append(f"  {row['items']:>10} {row['scan_mb']:>14} {row['memory_mb'] or '-':>11}"
                     f" {row['rows_on_disk_mb']:>9} {row['p50_ms']:>8} {row['usd_per_million_requests']:>20}"
                     f"   {row['verdict']}")
    return lines
