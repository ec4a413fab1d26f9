"""`pulse bench` (`make bench`): the speed and cost of every hot path, each figure measured in the same run as
what it is compared with. Prints a table and writes .pulse/bench.json. One thread throughout (BLAS and
onnxruntime), as a 1,769 MB Lambda has one vCPU. Tests never assert these numbers; this prints them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

# BLAS reads its thread count when NumPy loads: before any import of NumPy.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from pulse_dev.local.project import project_root  # noqa: E402
from pulse_dev.stats import percentile  # noqa: E402

if TYPE_CHECKING:
    from pulse.catalog import CatalogReader
    from pulse.ingest import Embedder
    from pulse.interest import UserInterest
    from pulse.store import Result
    from pulse_dev.local.functions import Handler
    from pulse_dev.local.stack import LocalStack
    from pulse_dev.movielens import Rating

BEHAVIOUR_TEXTS = Path("tests") / "fixtures" / "behaviour_texts.txt"  # in the project folder
DIM = 384


@dataclass(frozen=True)
class BenchSizes:
    """How much work each section does (`--quick` shrinks everything for the tests)."""

    catalog_items: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    s3_load_max_items: int = 1_000_000
    encoder_texts: int = 282
    ingest_item_events: int = 5_000
    ingest_text_events: int = 600
    replay_events: int = 20_000
    api_items: int = 100_000
    api_requests: int = 300
    bandwidth_bytes: int = 1 << 30


QUICK = BenchSizes(catalog_items=(2_000, 20_000), s3_load_max_items=20_000, encoder_texts=24,
                   ingest_item_events=400, ingest_text_events=40, replay_events=2_000, api_items=5_000,
                   api_requests=30, bandwidth_bytes=64 << 20)


# --- measuring ----------------------------------------------------------------------------------


def timings_ms(call: Callable[[], Any], repeats: int, warmup: int = 2) -> NDArray[Any]:
    for _ in range(warmup):
        call()
    samples = np.empty(repeats)
    for index in range(repeats):
        started = time.perf_counter()
        call()
        samples[index] = (time.perf_counter() - started) * 1000
    return samples


def summary(samples_ms: NDArray[Any]) -> dict[str, float]:
    p50, p99 = percentile(samples_ms, 50), percentile(samples_ms, 99)
    assert p50 is not None and p99 is not None, "timing needs at least one sample"
    return {"p50_ms": p50, "p99_ms": p99, "n": int(len(samples_ms))}


def resident_mb() -> float:
    """This process's resident memory (Linux /proc; ru_maxrss elsewhere)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_bandwidth_gb_s(size_bytes: int) -> float:
    """One thread's memory read bandwidth: the fastest full pass (max / sum) over a buffer larger than caches."""
    buffer = np.random.default_rng(0).standard_normal(size_bytes // 4, dtype=np.float32)
    best = math.inf
    for reduce in (np.max, np.sum):
        for _ in range(4):
            started = time.perf_counter()
            reduce(buffer)
            best = min(best, time.perf_counter() - started)
    return buffer.nbytes / best / 1e9


def unit_catalog_matrix(items: int, seed: int = 0) -> NDArray[Any]:
    rng = np.random.default_rng(seed)
    matrix = np.empty((items, DIM), dtype=np.float32)
    for start in range(0, items, 100_000):  # in slices: no float64 copy of a 1.5 GB matrix
        block = rng.standard_normal((min(100_000, items - start), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        matrix[start:start + len(block)] = block
    return matrix


def behaviour_texts(count: int) -> list[str]:
    lines = (project_root() / BEHAVIOUR_TEXTS).read_text(encoding="utf-8").splitlines()
    texts = [line for line in lines if line.strip()]
    return (texts * (count // len(texts) + 1))[:count]


# --- 1. encoder ---------------------------------------------------------------------------------


def bench_encoder(sizes: BenchSizes, batch: int) -> dict[str, Any]:
    from pulse_dev.encoder_build import DEFAULT_FP32_OUT

    texts = behaviour_texts(sizes.encoder_texts)
    models = {"int8": "model.int8.onnx"}
    fp32 = project_root() / DEFAULT_FP32_OUT  # where make encoder keeps it
    if fp32.is_file():
        models["fp32"] = str(fp32)
    result: dict[str, Any] = {"texts": len(texts), "ingest_batch": batch}
    for name, model_file in models.items():
        result[name] = encoder_figures(model_file, texts, batch)
    if "fp32" in result:
        result["int8_over_fp32_batch1"] = round(result["int8"]["batch1_texts_per_s"]
                                                / result["fp32"]["batch1_texts_per_s"], 2)
        result[f"int8_over_fp32_batch{batch}"] = round(result["int8"][f"batch{batch}_texts_per_s"]
                                                       / result["fp32"][f"batch{batch}_texts_per_s"], 2)
    result["pytorch"] = bench_pytorch(texts)
    if result["pytorch"].get("batch1_texts_per_s"):
        result["int8_over_pytorch_batch1"] = round(result["int8"]["batch1_texts_per_s"]
                                                   / result["pytorch"]["batch1_texts_per_s"], 2)
    return result


def encoder_figures(model_file: str, texts: Sequence[str], batch: int) -> dict[str, Any]:
    from pulse_encoder import Encoder

    cold = cold_start_encoder(model_file)
    single, batched = Encoder(model_file=model_file), Encoder(model_file=model_file, batch_size=batch)
    single.encode(["warm up"])
    latencies = np.array([timings_ms(partial(single.encode, [text]), 1, warmup=0)[0] for text in texts])
    seconds = min(_seconds(lambda: batched.encode(texts)) for _ in range(2))
    return {"batch1_texts_per_s": round(1000 / float(np.mean(latencies)), 1),
            f"batch{batch}_texts_per_s": round(len(texts) / seconds, 1),
            **{f"batch1_{key}": value for key, value in summary(latencies).items()}, **cold}


def cold_start_encoder(model_file: str) -> dict[str, float]:
    """Session creation + tokenizer load, and resident memory after it, in a fresh process."""
    code = ("import time, json; from pulse_dev.bench import resident_mb; before = resident_mb()\n"
            "from pulse_encoder import Encoder; imported = time.perf_counter()\n"
            f"encoder = Encoder(model_file={model_file!r}); loaded = time.perf_counter()\n"
            "encoder.encode(['warm up']); "
            "print(json.dumps({'cold_start_ms': round((loaded - imported) * 1000, 1), "
            "'rss_after_load_mb': round(resident_mb(), 1), 'rss_python_mb': round(before, 1)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def bench_pytorch(texts: Sequence[str]) -> dict[str, Any]:
    """The PyTorch reference (all-MiniLM-L6-v2 fp32 with mean pooling, as sentence-transformers runs it)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return {"skipped": "torch/transformers not installed (pip install -e '.[build]')"}
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from pulse_dev.encoder_build import source_model_dir

        source = source_model_dir()
    except Exception as error:  # noqa: BLE001 - the reference is optional
        return {"skipped": f"PyTorch reference unavailable: {error}"}
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()

    def encode(text: str) -> None:
        with torch.inference_mode():
            tokens = tokenizer([text], return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1)
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    latencies = np.array([timings_ms(partial(encode, text), 1, warmup=0)[0] for text in texts])
    return {"batch1_texts_per_s": round(1000 / float(np.mean(latencies)), 1),
            **{f"batch1_{key}": value for key, value in summary(latencies).items()}}


def _seconds(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# --- 2. ingest ----------------------------------------------------------------------------------


class MeasuredStore:
    """The in-memory store, also counting the write units each write would cost in DynamoDB."""

    def __init__(self) -> None:
        from pulse.store import InMemoryInterestStore, user_interest_model

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

        from pulse.store import _to_item, dynamodb_item_bytes

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
    from pulse.stream import lambda_record

    records = [lambda_record(shard_id="shardId-000000000000", sequence_number=f"{number + 1:056d}",
                             partition_key=event["user_id"], data=json.dumps(event).encode(), arrival=time.time(),
                             stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/bench",
                             region="us-east-1", role_arn="arn:aws:iam::123456789012:role/bench")
               for number, event in enumerate(events)]
    return [{"Records": records[start:start + batch]} for start in range(0, len(records), batch)]


def bench_ingest(sizes: BenchSizes, batch: int, catalog: CatalogReader, encoder: Embedder) -> dict[str, Any]:
    from pulse.dead_letters import InMemoryDeadLetters
    from pulse.ingest import IngestPipeline
    from pulse.settings import Settings
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
                                  dead_letters=InMemoryDeadLetters(), settings=Settings.from_env({}))
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
    from pulse.dead_letters import InMemoryDeadLetters
    from pulse.ingest import IngestPipeline
    from pulse.settings import Settings
    from pulse.stream import StreamRecord
    from pulse_dev.movielens import rating_event

    rows = []
    events = [rating_event(r) for r in ratings]
    for batch in (1, 100, 500):
        store = MeasuredStore()
        pipeline = IngestPipeline(store=store, load_embedder=lambda: encoder, catalog=catalog,
                                  dead_letters=InMemoryDeadLetters(), settings=Settings.from_env({}))
        for invocation in lambda_batches(events, batch):
            pipeline.process([StreamRecord.from_lambda(record) for record in invocation["Records"]])
        rows.append({"batch": batch, "events": len(events),
                     "writes_per_1000_events": round(store.writes * 1000 / len(events), 1),
                     "write_units_per_1000_events": round(store.write_units * 1000 / len(events), 1),
                     "mean_item_kb": round(float(np.mean(store.item_bytes)) / 1024, 2)})
    return rows


# --- 3. top-k -----------------------------------------------------------------------------------


def bench_topk(sizes: BenchSizes, bandwidth: float) -> list[dict[str, Any]]:
    faiss = importlib.import_module("faiss") if importlib.util.find_spec("faiss") else None
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    return [topk_figures(items, bandwidth, faiss) for items in sizes.catalog_items]


def topk_figures(items: int, bandwidth: float, faiss: Any) -> dict[str, Any]:
    """Pulse's scoring path (`recommend`: mat-vec, seen-item mask, top k) vs the bandwidth bound and faiss."""
    from pulse.catalog import in_memory_catalog
    from pulse.interest import ScaleState, UserInterest
    from pulse.recommend import recommend

    rng = np.random.default_rng(items)
    matrix = unit_catalog_matrix(items)
    catalog = in_memory_catalog([str(n) for n in range(items)], matrix)
    query = rng.standard_normal(DIM)
    user = UserInterest("u", scales={"short": ScaleState(query, 0.0)},
                        recent_items={str(n): 0.0 for n in rng.choice(items, 20, replace=False)})
    repeats = int(np.clip(4e9 / matrix.nbytes, 20, 1000))

    def pulse_path() -> None:
        recommend(catalog, user, k=10, at=0.0, half_lives={"short": 3600.0}, blend_weights={"short": 1.0})

    row = {"items": items, "matrix_mb": round(matrix.nbytes / 1e6, 1), **summary(timings_ms(pulse_path, repeats)),
           "bound_ms": round(matrix.nbytes / (bandwidth * 1e9) * 1000, 3)}
    row["pulse_over_bound"] = round(row["p50_ms"] / row["bound_ms"], 2)
    if faiss is not None:
        index = faiss.IndexFlatIP(DIM)
        index.add(matrix)
        single = (query / np.linalg.norm(query)).astype(np.float32)[None, :]
        row["faiss_p50_ms"] = summary(timings_ms(lambda: index.search(single, 10), repeats))["p50_ms"]
        row["pulse_over_faiss"] = round(row["p50_ms"] / row["faiss_p50_ms"], 2)
    return row


@contextmanager
def patient_s3() -> Iterator[None]:
    """moto builds a whole object before sending its first byte: give a 1.5 GB catalogue the time."""
    from botocore.config import Config

    from pulse import aws

    previous = aws.CLIENT_CONFIG
    aws.CLIENT_CONFIG = previous.merge(Config(read_timeout=900))
    aws.reset_clients()
    try:
        yield
    finally:
        aws.CLIENT_CONFIG = previous
        aws.reset_clients()


def bench_catalog_load(sizes: BenchSizes, stack: LocalStack, tmp: Path) -> list[dict[str, Any]]:
    """Loading a published version: from S3 (moto over HTTP, local) and from a local .npy."""
    from pulse.catalog import CatalogVersion
    from pulse.catalog_store import S3CatalogRepository

    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"), "bench/")
    rows = []
    for items in sizes.catalog_items:
        matrix = unit_catalog_matrix(items, seed=2)
        path = tmp / f"catalog-{items}.npy"
        np.save(path, matrix)
        local = min(_seconds(partial(np.load, path)) for _ in range(3))
        row = {"items": items, "local_npy_ms": round(local * 1000, 1)}
        if items <= sizes.s3_load_max_items:
            version = CatalogVersion(f"bench-{items}", [str(n) for n in range(items)], matrix, "bench")
            repository.publish(version)
            row["s3_ms"] = round(min(_seconds(partial(repository.load, version.version, None))
                                     for _ in range(2)) * 1000, 1)
        rows.append(row)
        path.unlink()
        del matrix
    return rows


# --- 4. API end to end --------------------------------------------------------------------------


def bench_api(sizes: BenchSizes, stack: LocalStack) -> dict[str, Any]:
    """GET /users/{id}/recommendations through the real handler (warm), and its cold start in a new process."""
    from pulse.catalog import CatalogVersion
    from pulse.catalog_store import S3CatalogRepository
    from pulse.interest import ApplyResult, ScaleState
    from pulse.store import DynamoInterestStore
    from pulse_dev.local.http import api_gateway_event

    bucket = stack.name_of("AWS::S3::Bucket")
    catalog = CatalogVersion(f"api-bench-{sizes.api_items}", [f"item-{n}" for n in range(sizes.api_items)],
                             unit_catalog_matrix(sizes.api_items), _fingerprint())
    S3CatalogRepository(bucket).publish(catalog)
    store = DynamoInterestStore(stack.name_of("AWS::DynamoDB::Table"), ttl_days=30)
    rng = np.random.default_rng(3)
    users = [f"bench-user-{n}" for n in range(50)]
    for user in users:
        def mutate(state: UserInterest) -> Any:
            state.scales = {name: ScaleState(rng.standard_normal(DIM), time.time()) for name in ("short", "long")}
            state.recent_items = {f"item-{n}": time.time() for n in rng.choice(sizes.api_items, 50, replace=False)}
            state.event_count = 50
            return ApplyResult(applied=50)

        store.update(user, mutate)
    stack.use_function_environments("WARNING")
    requests = [api_gateway_event("GET", f"/users/{users[n % len(users)]}/recommendations", query="k=10")
                for n in range(sizes.api_requests)]
    stack.invoke("ApiFunction", requests[0])  # cold in this process: imports, catalogue load
    answers: list[int] = []
    samples = timings_ms(lambda: answers.append(stack.invoke("ApiFunction", requests[len(answers) % len(requests)])
                                                ["statusCode"]), sizes.api_requests, warmup=0)
    if set(answers) != {200}:
        raise RuntimeError(f"API benchmark: answers {sorted(set(answers))}")
    return {"items": sizes.api_items, **summary(samples), "cold_start": api_cold_start(stack, users[0])}


def api_cold_start(stack: LocalStack, user: str) -> dict[str, Any]:
    """A new process as a new Lambda container: import the handler, then the first request (catalogue load)."""
    from pulse_dev.local.functions import function_environment

    spec = stack.function("ApiFunction")
    handler_file = spec.code_dir / f"{spec.module.replace('.', '/')}.py"
    code = ("import json, sys, time; started = time.perf_counter()\n"
            "from pathlib import Path\n"
            "from pulse_dev.local.functions import LambdaContext, import_handler\n"
            "from pulse_dev.local.http import api_gateway_event\n"
            f"handler = import_handler(Path({str(handler_file)!r}), {spec.attribute!r}, 'app')\n"
            "imported = time.perf_counter()\n"
            f"answer = handler(api_gateway_event('GET', '/users/{user}/recommendations', query='k=10'), "
            "LambdaContext('ApiFunction', 1769, 29)); done = time.perf_counter()\n"
            "print(json.dumps({'import_ms': round((imported - started) * 1000, 1), "
            "'first_request_ms': round((done - imported) * 1000, 1), 'status': answer['statusCode']}))")
    with function_environment(spec, {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"API cold start failed: {out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["total_ms"] = round(figures["import_ms"] + figures["first_request_ms"], 1)
    return figures


def _fingerprint() -> str:
    from pulse.runtime import encoder_fingerprint

    return encoder_fingerprint() or "bench"


# --- the run ------------------------------------------------------------------------------------


def run(sizes: BenchSizes, out: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    import tempfile

    from pulse.catalog import in_memory_catalog
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
    stack = LocalStack(port=0, parameters={"CatalogCheckSeconds": "0"}).start()
    try:
        progress("catalogue load (S3 through moto, local .npy)")
        with tempfile.TemporaryDirectory() as tmp, patient_s3():
            report["catalog_load"] = bench_catalog_load(sizes, stack, Path(tmp))
        progress("API end to end")
        report["api"] = bench_api(sizes, stack)
    finally:
        stack.stop()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["settings_note"] = f"ingest batch {batch} (IngestBatchSize); defaults {Settings.from_env({}).half_lives}"
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

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "system": platform.platform()}


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
    lines += ["", "top-k (k=10, recommend(): mat-vec + filters + block-max prefilter + exact top k), 1 thread",
              "      items   matrix MB   p50 ms   p99 ms   bound ms   x bound   faiss p50 ms   x faiss"]
    for row in report["topk"]:
        lines.append(f"  {row['items']:>9} {row['matrix_mb']:>11} {row['p50_ms']:>8} {row['p99_ms']:>8}"
                     f" {row['bound_ms']:>10} {row['pulse_over_bound']:>9} {row.get('faiss_p50_ms', '-'):>14}"
                     f" {row.get('pulse_over_faiss', '-'):>9}")
    lines += ["", "catalogue load        items   local .npy ms   S3 (moto) ms"]
    for row in report["catalog_load"]:
        lines.append(f"  {'':<16}{row['items']:>9} {row['local_npy_ms']:>15} {row.get('s3_ms', '-'):>14}")
    api = report["api"]
    cold = api["cold_start"]
    lines += ["", f"API GET /users/{{id}}/recommendations, warm, {api['items']} items, through the handler "
                  f"(DynamoDB in moto): p50 {api['p50_ms']} ms, p99 {api['p99_ms']} ms ({api['n']} requests)",
              f"API cold start (new process): imports {cold['import_ms']} ms + first request with catalogue load "
              f"{cold['first_request_ms']} ms = {cold['total_ms']} ms",
              "", f"whole run {report['seconds']} s"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
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
