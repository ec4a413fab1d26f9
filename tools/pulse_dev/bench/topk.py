"""3. Top-k and the catalogue load: recommend() in float32 and as the API scores (int8 scan, float32 rescoring)
beside the memory-bandwidth bound and faiss; S3 and .npy loads."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.measure import DIM, BenchSizes, seconds_of, summary, timings_ms, unit_catalog_matrix

RECALL_QUERIES = 50  # users whose int8 top 10 is compared with the float32 one

if TYPE_CHECKING:
    from pulse_dev.local.stack import LocalStack


def bench_topk(sizes: BenchSizes, bandwidth: float) -> list[dict[str, Any]]:
    faiss = importlib.import_module("faiss") if importlib.util.find_spec("faiss") else None
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    return [topk_figures(items, bandwidth, faiss) for items in sizes.catalog_items]


def topk_figures(items: int, bandwidth: float, faiss: Any) -> dict[str, Any]:
    """Pulse's scoring path (`recommend`: mat-vec, seen-item mask, top k) in float32 vs the bandwidth bound and
    faiss; then the API's path on the same version (int8 scan, float32 rescoring) with its recall."""
    from pulse.catalog.version import in_memory_catalog
    from pulse.interest.model import ScaleState, UserInterest
    from pulse.serving.int8_scan import prepare_for_serving
    from pulse.serving.recommend import recommend

    rng = np.random.default_rng(items)
    matrix = unit_catalog_matrix(items)
    catalog = in_memory_catalog([str(n) for n in range(items)], matrix)
    users = [UserInterest("u", scales={"short": ScaleState(rng.standard_normal(DIM), 0.0)},
                          recent_items={str(n): 0.0 for n in rng.choice(items, 20, replace=False)})
             for _ in range(RECALL_QUERIES)]
    repeats = int(np.clip(4e9 / matrix.nbytes, 20, 1000))

    def answer(user: UserInterest) -> list[str]:
        found = recommend(catalog, user, k=10, at=0.0, half_lives={"short": 3600.0}, blend_weights={"short": 1.0})
        return [item.item_id for item in found.items]

    row: dict[str, Any] = {"items": items, "matrix_mb": round(matrix.nbytes / 1e6, 1),
                           **summary(timings_ms(partial(answer, users[0]), repeats)),
                           "bound_ms": round(matrix.nbytes / (bandwidth * 1e9) * 1000, 3)}
    row["pulse_over_bound"] = round(row["p50_ms"] / row["bound_ms"], 2)
    if faiss is not None:
        index = faiss.IndexFlatIP(DIM)
        index.add(matrix)
        vector = users[0].scales["short"].vector
        single = (vector / np.linalg.norm(vector)).astype(np.float32)[None, :]
        row["faiss_p50_ms"] = summary(timings_ms(lambda: index.search(single, 10), repeats))["p50_ms"]
        row["pulse_over_faiss"] = round(row["p50_ms"] / row["faiss_p50_ms"], 2)
        del index
    exact = [answer(user) for user in users]
    del matrix
    prepare_ms = seconds_of(partial(prepare_for_serving, catalog)) * 1000
    found = sum(len(set(answer(user)) & set(truth)) for user, truth in zip(users, exact, strict=True))
    int8 = summary(timings_ms(partial(answer, users[0]), repeats))
    row["int8"] = {**int8, "bytes_per_item": round(catalog.scan.nbytes / items, 1),
                   "recall_at_10": round(found / sum(map(len, exact)), 4), "prepare_ms": round(prepare_ms, 1),
                   "float32_over_int8": round(row["p50_ms"] / int8["p50_ms"], 2),
                   "bound_ms": round(catalog.scan.nbytes / (bandwidth * 1e9) * 1000, 3)}
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
    from pulse.catalog.store import S3CatalogRepository
    from pulse.catalog.version import CatalogVersion

    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"), "bench/")
    rows = []
    for items in sizes.catalog_items:
        matrix = unit_catalog_matrix(items, seed=2)
        path = tmp / f"catalog-{items}.npy"
        np.save(path, matrix)
        local = min(seconds_of(partial(np.load, path)) for _ in range(3))
        row = {"items": items, "local_npy_ms": round(local * 1000, 1)}
        if items <= sizes.s3_load_max_items:
            version = CatalogVersion(f"bench-{items}", [str(n) for n in range(items)], matrix, "bench")
            repository.publish(version)
            row["s3_ms"] = round(min(seconds_of(partial(repository.load, version.version, None))
                                     for _ in range(2)) * 1000, 1)
            # As the API loads: the rows streamed to a mapped file, the published int8 codes into memory.
            row["s3_api_ms"] = round(min(seconds_of(partial(_api_load, repository, version.version, str(tmp)))
                                         for _ in range(2)) * 1000, 1)
        rows.append(row)
        path.unlink()
        del matrix
    return rows


def _api_load(repository: Any, version: str, rows_dir: str) -> None:
    from pulse.serving.int8_scan import prepare_for_serving

    prepare_for_serving(repository.load(version, None, rows_dir=rows_dir))
