"""3. Top-k and the catalogue load: recommend() beside the memory-bandwidth bound and faiss; S3 and .npy loads."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.measure import DIM, BenchSizes, seconds_of, summary, timings_ms, unit_catalog_matrix

if TYPE_CHECKING:
    from pulse_dev.local.stack import LocalStack


def bench_topk(sizes: BenchSizes, bandwidth: float) -> list[dict[str, Any]]:
    faiss = importlib.import_module("faiss") if importlib.util.find_spec("faiss") else None
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    return [topk_figures(items, bandwidth, faiss) for items in sizes.catalog_items]


def topk_figures(items: int, bandwidth: float, faiss: Any) -> dict[str, Any]:
    """Pulse's scoring path (`recommend`: mat-vec, seen-item mask, top k) vs the bandwidth bound and faiss."""
    from pulse.catalog.version import in_memory_catalog
    from pulse.interest.model import ScaleState, UserInterest
    from pulse.serving.recommend import recommend

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
        rows.append(row)
        path.unlink()
        del matrix
    return rows
