"""`pulse bench`: every section runs and reports every figure (a small run; tests never assert timings)."""

import json
import subprocess
import sys

import pytest

from pulse.interest.store import dynamodb_item_bytes
from pulse_dev.bench import DIM

pytestmark = pytest.mark.slow  # the pulse CLI in a subprocess


def test_bench_quick_run_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "pulse_dev.cli", "bench", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["read_bandwidth_gb_s"] > 0 and report["machine"]["cores"] >= 1

    encoder = report["encoder"]
    for model in ("int8", "fp32"):
        figures = encoder[model]
        assert figures["batch1_texts_per_s"] > 0 and figures["batch100_texts_per_s"] > 0
        assert 0 < figures["batch1_p50_ms"] <= figures["batch1_p99_ms"]
        assert figures["cold_start_ms"] > 0 and figures["rss_after_load_mb"] > figures["rss_python_mb"]
    assert encoder["int8_over_fp32_batch1"] == round(encoder["int8"]["batch1_texts_per_s"]
                                                     / encoder["fp32"]["batch1_texts_per_s"], 2)
    assert "pytorch" in encoder

    ingest = report["ingest"]
    for stream in ("item events (catalogue vectors)", "text events (encoder)"):
        assert ingest[stream]["events_per_cpu_second"] > 0 and ingest[stream]["events"] > 0
    writes = {row["batch"]: row for row in ingest["dynamodb_writes"]}
    assert writes[1]["writes_per_1000_events"] == 1000  # one write per event without batching
    assert writes[500]["writes_per_1000_events"] < writes[100]["writes_per_1000_events"] < 1000  # one per user
    assert all(row["write_units_per_1000_events"] >= row["writes_per_1000_events"] for row in writes.values())

    assert [row["items"] for row in report["topk"]] == [2_000, 20_000]
    for row in report["topk"]:  # the bound: reading the whole float32 matrix once at the measured bandwidth
        matrix_bytes = row["items"] * DIM * 4
        assert row["matrix_mb"] == round(matrix_bytes / 1e6, 1)
        assert row["bound_ms"] == round(matrix_bytes / (report["read_bandwidth_gb_s"] * 1e9) * 1000, 3) > 0
        assert row["pulse_over_bound"] == round(row["p50_ms"] / row["bound_ms"], 2)
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert all(row["local_npy_ms"] > 0 and row["s3_ms"] > 0 for row in report["catalog_load"])
    api = report["api"]
    assert 0 < api["p50_ms"] <= api["p99_ms"] and api["cold_start"]["status"] == 200
    # the user's DynamoDB read is timed on its own, once per request, and is part of the request's time
    assert api["store"]["n"] == api["without_store"]["n"] == api["n"]
    assert 0 < api["store"]["p50_ms"] < api["p50_ms"] and 0 < api["without_store"]["p50_ms"] < api["p50_ms"]
    # one thread throughout, in every BLAS and OpenMP library the run loaded (NumPy's first of all)
    assert report["machine"]["thread_pools"] and set(report["machine"]["thread_pools"].values()) == {1}
    assert any("openblas" in library for library in report["machine"]["thread_pools"])
    sizing = report["sizing"]
    assert [row["events_per_s"] for row in sizing["events"]["rates"]] == [1_000, 10_000, 100_000]
    assert [row["items"] for row in sizing["requests"]["catalogues"]] == [1_000_000, 10_000_000, 100_000_000]
    cold = api["cold_start"]
    assert cold["total_ms"] == round(cold["import_ms"] + cold["first_request_ms"], 1) > 0
    assert "x bound" in run.stdout and "API cold start" in run.stdout and "user's DynamoDB read" in run.stdout
    assert "sizing and cost" in run.stdout


def test_dynamodb_item_size_follows_the_documented_rules():
    item = {"user_id": {"S": "abc"}, "vector": {"B": b"\x00" * 1536}, "count": {"N": "12345"},
            "scales": {"L": [{"M": {"t": {"N": "1.5"}}}]}}
    # names 7+6+5+6, values 3 + 1536 + (5 digits -> 4) + list(3 + map(3 + "t" 1 + 2 + 1) + 1)
    assert dynamodb_item_bytes(item) == 24 + 3 + 1536 + 4 + (3 + (3 + 1 + 2 + 1) + 1)
