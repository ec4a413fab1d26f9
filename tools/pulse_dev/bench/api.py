"""4. The API end to end: the real handler warm, and its cold start in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.measure import DIM, BenchSizes, summary, timings_ms, unit_catalog_matrix

if TYPE_CHECKING:
    from pulse.interest.model import UserInterest
    from pulse_dev.local.stack import LocalStack


def bench_api(sizes: BenchSizes, stack: LocalStack) -> dict[str, Any]:
    """GET /users/{id}/recommendations through the real handler (warm), and its cold start in a new process."""
    from pulse.catalog.store import S3CatalogRepository
    from pulse.catalog.version import CatalogVersion
    from pulse.interest.model import ApplyResult, ScaleState
    from pulse.interest.store import DynamoInterestStore
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
    with store_reads_timed() as store_ms:
        samples = timings_ms(lambda: answers.append(stack.invoke("ApiFunction", requests[len(answers) % len(requests)])
                                                    ["statusCode"]), sizes.api_requests, warmup=0)
    if set(answers) != {200} or len(store_ms) != len(samples):
        raise RuntimeError(f"API benchmark: answers {sorted(set(answers))}, {len(store_ms)} store reads")
    reads = np.array(store_ms)
    return {"items": sizes.api_items, **summary(samples), "store": summary(reads),
            "without_store": summary(np.asarray(samples) - reads), "cold_start": api_cold_start(stack, users[0])}


@contextmanager
def store_reads_timed() -> Iterator[list[float]]:
    """Milliseconds of each DynamoDB read of a user (the store's share of a request), while in the block."""
    from pulse.interest.store import DynamoInterestStore

    durations: list[float] = []
    real_get = DynamoInterestStore.get

    def get(self: DynamoInterestStore, user_id: str) -> UserInterest | None:
        started = time.perf_counter()
        try:
            return real_get(self, user_id)
        finally:
            durations.append((time.perf_counter() - started) * 1000)

    DynamoInterestStore.get = get  # type: ignore[method-assign]
    try:
        yield durations
    finally:
        DynamoInterestStore.get = real_get  # type: ignore[method-assign]


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
    from pulse.wiring import encoder_fingerprint

    return encoder_fingerprint() or "bench"
