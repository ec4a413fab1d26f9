"""4. The API end to end: the real handler warm, and its cold start in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.measure import DIM, BenchSizes, unit_catalog_matrix

if TYPE_CHECKING:
    from pulse.interest.model import UserInterest
    from pulse_dev.local.stack import LocalStack


def bench_api(sizes: BenchSizes, stack: LocalStack) -> dict[str, Any]:
    """GET /users/{id}/recommendations through the real handler (warm), and its cold start in a new process."""
    from pulse.catalog.store import S3CatalogRepository
    from pulse.catalog.version import CatalogVersion
    from pulse.interest.model import ApplyResult, ScaleState
    from pulse.interest.store import DynamoInterestStore

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
    figures = {"items": sizes.api_items, **api_container(stack, users, sizes.api_requests)}
    with tempfile.TemporaryDirectory() as copy:
        s3 = stack.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="catalog/"):
            for entry in page.get("Contents", []):
                (Path(copy) / entry["Key"]).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, entry["Key"], str(Path(copy) / entry["Key"]))
        figures["cold_start_local_files"] = api_container(stack, users, 0, catalog_dir=Path(copy))["cold_start"]
    return figures


def api_container(stack: LocalStack, users: list[str], requests: int,
                  catalog_dir: Path | None = None) -> dict[str, Any]:
    """The API function in a process of its own, as in a Lambda container (nothing of the bench's own heap,
    threads or collector in its way): imports, the first request (which loads the catalogue), then `requests`
    warm ones, each timed with the user's DynamoDB read timed on its own. `catalog_dir`: the catalogue read from
    that local copy of the bucket, not S3."""
    from pulse_dev.local.functions import function_environment
    from pulse_dev.local.stack import LOCAL_ENVIRONMENT

    spec = stack.function("ApiFunction")
    handler_file = spec.code_dir / f"{spec.module.replace('.', '/')}.py"
    arguments = [str(handler_file), spec.attribute, str(requests), *users]
    # Tracing off as everywhere on the local stack: there is no X-Ray daemon to send segments to. LAMBDA_TASK_ROOT
    # as in a Lambda container: there the X-Ray SDK samples locally and creates no X-Ray clients at import
    # (outside Lambda it creates two, ~65 ms of a cold start no deployment pays).
    local_copy = {"PULSE_BENCH_CATALOG_DIR": str(catalog_dir)} if catalog_dir else {}
    with function_environment(spec, {**LOCAL_ENVIRONMENT, "POWERTOOLS_LOG_LEVEL": "WARNING",
                                     "LAMBDA_TASK_ROOT": str(spec.code_dir), **local_copy}):
        out = subprocess.run([sys.executable, "-m", "pulse_dev.api_container", *arguments], capture_output=True,
                             text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"API benchmark failed: {out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


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


def _fingerprint() -> str:
    from pulse.wiring import encoder_fingerprint

    return encoder_fingerprint() or "bench"
