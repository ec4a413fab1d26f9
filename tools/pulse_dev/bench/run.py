"""The run: every section in order, the report as a table and .pulse/bench.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.api import bench_api
from pulse_dev.bench.encoder import bench_encoder
from pulse_dev.bench.ingest import bench_ingest
from pulse_dev.bench.measure import QUICK, BenchSizes, read_bandwidth_gb_s
from pulse_dev.bench.sizing import format_sizing, sizing
from pulse_dev.bench.topk import bench_catalog_load, bench_topk, patient_s3
from pulse_dev.local.project import project_root

if TYPE_CHECKING:
    pass


def run(sizes: BenchSizes, out: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    import tempfile

    from pulse.catalog.version import in_memory_catalog
    from pulse.settings import Settings
    from pulse_dev.local.stack import LocalStack
    from pulse_dev.movielens import load_movies
    from pulse_encoder import load_encoder

    started = time.perf_counter()
    batch = int(_template_default("IngestBatchSize"))
    report: dict[str, Any] = {"machine": machine(), "threads": 1}
    progress("memory bandwidth")
    report["read_bandwidth_gb_s"] = round(read_bandwidth_gb_s(sizes.bandwidth_bytes), 2)
    progress("encoder: int8 vs fp32 (vs PyTorch)")
    report["encoder"] = bench_encoder(sizes, batch)
    progress("ingest through the real handler")
    encoder = load_encoder(intra_op_threads=1)
    movies = load_movies()
    vectors = encoder.encode([" ".join([m.display_title, *m.genres]) for m in movies])
    catalog = in_memory_catalog([m.item_id for m in movies], vectors, fingerprint=encoder.fingerprint)
    report["ingest"] = bench_ingest(sizes, batch, catalog, encoder)
    progress("top-k over synthetic catalogues")
    report["topk"] = bench_topk(sizes, report["read_bandwidth_gb_s"])
    # Each on a local stack of its own with the template's defaults: the API's moto must not hold the 1.5 GB the
    # catalogue-load section put in S3 (its collector would show in the API's latency, as no deployment has it).
    progress("catalogue load (S3 through moto, local .npy)")
    with LocalStack(port=0).start() as stack, tempfile.TemporaryDirectory() as tmp, patient_s3():
        report["catalog_load"] = bench_catalog_load(sizes, stack, Path(tmp))
    progress("API end to end")
    with LocalStack(port=0).start() as stack:
        report["api"] = bench_api(sizes, stack)
    report["machine"]["thread_pools"] = machine()["thread_pools"]  # after every section has loaded its libraries
    report["sizing"] = sizing(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["settings_note"] = f"ingest batch {batch} (IngestBatchSize); defaults {Settings.default('half_lives')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def _template_default(name: str) -> str:
    from pulse_dev.local.template import load_template

    return str(load_template(project_root() / "template.yaml")["Parameters"][name]["Default"])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import onnxruntime
    from threadpoolctl import threadpool_info

    # Every BLAS and OpenMP pool loaded so far (NumPy's, faiss's, SciPy's), by library file: all should say 1.
    pools = {Path(pool["filepath"]).name: pool["num_threads"] for pool in threadpool_info()}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "system": platform.platform(), "thread_pools": pools}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, Python "
             f"{report['machine']['python']}, NumPy {report['machine']['numpy']}, onnxruntime "
             f"{report['machine']['onnxruntime']}; 1 thread; read bandwidth {report['read_bandwidth_gb_s']} GB/s"]
    encoder, batch = report["encoder"], report["encoder"]["ingest_batch"]
    lines += ["", f"encoder ({encoder['texts']} behaviour texts)   texts/s b1   texts/s b{batch}   p50 ms   p99 ms"
                  "   cold start ms   RSS MB"]
    for name in ("int8", "fp32", "pytorch"):
        row = encoder.get(name) or {}
        if "batch1_texts_per_s" not in row:
            lines.append(f"  {name:<30} {row.get('skipped', 'not built')}")
            continue
        lines.append(f"  {name:<30} {row['batch1_texts_per_s']:>11} {row.get(f'batch{batch}_texts_per_s', '-'):>14}"
                     f" {row['batch1_p50_ms']:>8} {row['batch1_p99_ms']:>8} {row.get('cold_start_ms', '-'):>15}"
                     f" {row.get('rss_after_load_mb', '-'):>8}")
    ratios = [f"{key.replace('_', ' ')} {value}x" for key, value in encoder.items() if key.startswith("int8_over")]
    lines.append("  " + "; ".join(ratios))
    ingest = report["ingest"]
    lines += ["", f"ingest through the real handler (batches of {ingest['batch']}, in-memory store)"]
    for name, row in ingest.items():
        if isinstance(row, dict) and "events_per_cpu_second" in row:
            lines.append(f"  {name:<34} {row['events_per_cpu_second']:>9} events/s per vCPU ({row['events']} events)")
    lines.append("  DynamoDB writes per 1,000 MovieLens events:  batch  writes  write units  mean item KB")
    for row in ingest["dynamodb_writes"]:
        lines.append(f"  {'':<44}{row['batch']:>5} {row['writes_per_1000_events']:>7}"
                     f" {row['write_units_per_1000_events']:>12} {row['mean_item_kb']:>13}")
    lines += ["", "top-k in float32 (k=10, recommend(): mat-vec + filters + block-max prefilter + exact top k)",
              "      items   matrix MB   p50 ms   p99 ms   bound ms   x bound   faiss p50 ms   x faiss"]
    for row in report["topk"]:
        lines.append(f"  {row['items']:>9} {row['matrix_mb']:>11} {row['p50_ms']:>8} {row['p99_ms']:>8}"
                     f" {row['bound_ms']:>10} {row['pulse_over_bound']:>9} {row.get('faiss_p50_ms', '-'):>14}"
                     f" {row.get('pulse_over_faiss', '-'):>9}")
    lines += ["", "top-k as the API scores: int8 scan (onnxruntime MatMulInteger) + float32 rescoring of a shortlist",
              "      items   bytes/item   p50 ms   p99 ms   bound ms   float32 p50 / int8 p50   recall@10   prepare ms"]
    for row in report["topk"]:
        int8 = row["int8"]
        lines.append(f"  {row['items']:>9} {int8['bytes_per_item']:>12} {int8['p50_ms']:>8} {int8['p99_ms']:>8}"
                     f" {int8['bound_ms']:>10} {int8['float32_over_int8']:>24} {int8['recall_at_10']:>11}"
                     f" {int8['prepare_ms']:>12}")
    lines += ["", "catalogue load        items   local .npy ms   S3 (moto) ms   as the API (mapped rows + int8) ms"]
    for row in report["catalog_load"]:
        lines.append(f"  {'':<16}{row['items']:>9} {row['local_npy_ms']:>15} {row.get('s3_ms', '-'):>14}"
                     f" {row.get('s3_api_ms', '-'):>36}")
    api = report["api"]
    cold = api["cold_start"]
    lines += ["", f"API GET /users/{{id}}/recommendations, warm, {api['items']} items, through the handler "
                  f"(DynamoDB in moto): p50 {api['p50_ms']} ms, p99 {api['p99_ms']} ms ({api['n']} requests)",
              f"  of which the user's DynamoDB read: p50 {api['store']['p50_ms']} ms, p99 {api['store']['p99_ms']} ms;"
              f" the rest (handler, scoring): p50 {api['without_store']['p50_ms']} ms,"
              f" p99 {api['without_store']['p99_ms']} ms",
              f"API cold start (new process): imports {cold['import_ms']} ms + first request with catalogue load "
              f"{cold['first_request_ms']} ms = {cold['total_ms']} ms"]
    if local := api.get("cold_start_local_files"):
        lines.append(f"  with the catalogue from local files (no S3 transfer): imports {local['import_ms']} ms + first "
                     f"request {local['first_request_ms']} ms = {local['total_ms']} ms")
    if "sizing" in report:
        lines += format_sizing(report["sizing"])
    lines += ["", f"whole run {report['seconds']} s"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from pulse_dev import bench

    if bench.BLAS_LOADED_UNPINNED:  # NumPy's BLAS would use every core: measure in a fresh interpreter instead
        arguments = list(sys.argv[1:] if argv is None else ["bench", *argv])
        os.execv(sys.executable, [sys.executable, "-m", "pulse_dev.cli", *arguments])
    parser = argparse.ArgumentParser(prog="pulse bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".pulse/bench.json"))
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, figures not meaningful)")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    steps = tqdm(total=6, desc="bench", unit="section", bar_format="{desc}: {n}/{total} {bar} {elapsed}")

    def progress(label: str) -> None:
        steps.set_description(f"bench: {label}")
        steps.update(0 if steps.n == 0 and label == "memory bandwidth" else 1)

    report = run(QUICK if args.quick else BenchSizes(), args.out, progress)
    steps.update(steps.total - steps.n)
    steps.close()
    print(format_report(report))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
