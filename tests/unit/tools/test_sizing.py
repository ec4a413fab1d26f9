"""The bench's sizing and cost arithmetic (pulse_dev.bench.sizing) on a report whose figures are chosen by hand."""

import math

import pytest

from pulse_dev.bench.sizing import PRICES, SECONDS_PER_MONTH, format_sizing, sizing


def report(item_rate=10_000.0, text_rate=500.0, write_units=70.0, writes=40.0, mean_item_kb=1.4, api_p50=14.0,
           topk_100k=5.0, topk_1m=50.0, int8_1m=40.0):
    largest = {"items": 1_000_000, "p50_ms": topk_1m, **({"int8": {"p50_ms": int8_1m}} if int8_1m else {})}
    return {
        "ingest": {"batch": 100,
                   "item events (catalogue vectors)": {"events_per_cpu_second": item_rate},
                   "text events (encoder)": {"events_per_cpu_second": text_rate},
                   "dynamodb_writes": [{"batch": 1, "write_units_per_1000_events": 1e6, "writes_per_1000_events": 1e3,
                                        "mean_item_kb": 9.0},
                                       {"batch": 100, "write_units_per_1000_events": write_units,
                                        "writes_per_1000_events": writes, "mean_item_kb": mean_item_kb}]},
        "api": {"items": 100_000, "p50_ms": api_p50},
        "topk": [{"items": 100_000, "p50_ms": topk_100k}, largest],
    }


def test_the_cost_of_a_million_events_adds_up_duration_writes_reads_puts_and_the_archive():
    result = sizing(report(), text_share=0.1)
    cpu_seconds = 0.9 / 10_000 + 0.1 / 500  # per event
    assert result["events"]["cpu_ms_per_event"] == pytest.approx(cpu_seconds * 1000, abs=1e-4)
    costs = result["events"]["usd_per_million_events"]["sessions"]
    # billed duration: the CPU, plus 0.04 writes an event 8 at a time and one batch read per 100 events, 5 ms each
    waiting = (0.04 * 5 / 8 + 10 / 100) / 1000
    assert costs["lambda"] == pytest.approx(round(1e6 * ((cpu_seconds + waiting) * 1769 / 1024
                                                         * PRICES["lambda_gb_second"]
                                                         + PRICES["lambda_request"] / 100), 3))
    # 0.07 write units and 0.04 reads of one 4 KB unit per event (the batch the template deploys)
    assert costs["dynamodb"] == pytest.approx(round(0.07 * 0.625 + 0.04 * 0.125, 3))
    assert costs["kinesis_puts"] == pytest.approx(0.014)
    assert costs["archive"] == pytest.approx(round(5 * 1024 / 1024**3 * 0.029 * 1e6, 3))  # 5 KB per record
    parts = costs["lambda"] + costs["dynamodb"] + costs["kinesis_puts"] + costs["archive"]
    assert costs["total (without shard-hours)"] == pytest.approx(parts, abs=2e-3)


def test_interleaved_users_cost_one_write_per_event():
    costs = sizing(report())["events"]["usd_per_million_events"]
    # the batch-1 row: 1,000 writes and 1e6 write units per 1,000 events, items of 9 KB (3 read units each)
    assert costs["interleaved"]["dynamodb"] == pytest.approx(round(1000 * 0.625 + 1 * 3 * 0.125, 3))
    assert costs["interleaved"]["total (without shard-hours)"] > costs["sessions"]["total (without shard-hours)"]


def test_each_event_rate_gets_its_shards_concurrency_and_monthly_bill():
    rates = {row["events_per_s"]: row for row in sizing(report(), text_share=0.1)["events"]["rates"]}
    assert [rates[rate]["shards"] for rate in (1_000, 10_000, 100_000)] == [1, 10, 100]
    assert rates[10_000]["dynamodb_write_units_per_s"] == {"sessions": 700, "interleaved": 10_000_000}
    per_event = sum(value for key, value in sizing(report())["events"]["usd_per_million_events"]["sessions"].items()
                    if key != "total (without shard-hours)") / 1e6
    assert rates[1_000]["usd_per_month"] == pytest.approx(per_event * 1_000 * SECONDS_PER_MONTH + 730 * 0.015, abs=3)


def test_a_shard_whose_events_need_more_than_one_vcpu_gets_a_parallelization_factor():
    rows = sizing(report(text_rate=400.0), text_share=1.0)["events"]["rates"]
    assert all(row["parallelization_factor"] == math.ceil(1_000 / 400) for row in rows)  # 2.5 vCPUs per shard: 3
    assert all(row["ingest_concurrency"] == row["shards"] * 3 for row in rows)
    assert all(row["needs"] is None for row in rows[:2])
    slow = sizing(report(text_rate=50.0), text_share=1.0)["events"]["rates"]
    assert "more shards" in slow[0]["needs"]  # 20 vCPUs per shard: more than 10 batches per shard can give


def test_catalogues_past_one_lambdas_memory_or_latency_say_what_takes_over():
    rows = {row["items"]: row for row in sizing(report())["requests"]["catalogues"]}
    assert rows[1_000_000]["verdict"] == "one Lambda" and rows[1_000_000]["scan_mb"] == 388  # 384 codes + a scale
    # at its peak a container holds three copies of the codes (a load's body and array, the version it replaces),
    # the ids, and two row files on /tmp
    assert rows[1_000_000]["memory_mb"] >= 3 * 388 + 250 + 350 and rows[1_000_000]["rows_on_disk_mb"] == 2 * 1536
    assert rows[1_000_000]["p50_ms"] == pytest.approx(14.0 - 4.0 + 40.0)  # the API's int8 scan, not float32
    assert rows[10_000_000]["memory_mb"] is None
    assert "shard the catalogue over 3+ functions" in rows[10_000_000]["verdict"]  # 30.7 GB of rows on /tmp
    assert "OpenSearch" in rows[100_000_000]["verdict"]
    fast_memory_slow_scoring = sizing(report(int8_1m=150.0))["requests"]["catalogues"][0]
    assert fast_memory_slow_scoring["verdict"].startswith("fits in memory but the scan takes 150 ms")
    without_int8 = sizing(report(int8_1m=None))["requests"]["catalogues"][0]  # a report from before the scan
    assert without_int8["p50_ms"] == pytest.approx(14.0 - 5.0 + 50.0)


def test_the_printed_table_has_a_row_per_rate_and_catalogue():
    lines = format_sizing(sizing(report()))
    assert sum(line.strip().startswith(("1000 ", "10000 ", "100000 ")) for line in lines) == 3
    assert sum("verdict" not in line and line.strip().startswith(("1000000", "10000000", "100000000"))
               for line in lines) == 3
