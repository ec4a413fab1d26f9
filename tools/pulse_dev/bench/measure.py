"""Sizes and the measuring helpers every section of the bench uses."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pulse_dev.local.project import project_root
from pulse_dev.stats import percentile

if TYPE_CHECKING:
    pass


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

def seconds_of(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
