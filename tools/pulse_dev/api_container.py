"""The API function in this process as in a fresh Lambda container, for `make bench`: imports, the first request
(which loads the catalogue), then warm requests, each timed with the user's DynamoDB read on its own.

    python -m pulse_dev.api_container HANDLER_FILE ATTRIBUTE REQUESTS USER...   (prints the figures as JSON)

Only the standard library is imported before the clock starts, so the imports measured are the handler's own.
With PULSE_BENCH_CATALOG_DIR set (a copy of the bucket's keys as files), the catalogue is read from those local
files instead of S3: the cold start without the network's share.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def container_main(argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    from pulse_dev.local.functions import LambdaContext, import_handler

    handler_file, attribute, count, users = argv[0], argv[1], int(argv[2]), argv[3:]
    handler = import_handler(Path(handler_file), attribute, "app")
    imported = time.perf_counter()
    if local_copy := os.environ.get("PULSE_BENCH_CATALOG_DIR"):
        read_catalogue_from(Path(local_copy))
    from pulse_dev.local.http import api_gateway_event

    context = LambdaContext("ApiFunction", 1769, 29)
    events = [api_gateway_event("GET", f"/users/{users[n % len(users)]}/recommendations", query="k=10")
              for n in range(count + 1)]
    loading = time.perf_counter()
    first = handler(events[0], context)
    done = time.perf_counter()

    import numpy as np

    from pulse_dev.bench.api import store_reads_timed
    from pulse_dev.bench.measure import summary, timings_ms

    cold = {"import_ms": round((imported - started) * 1000, 1), "first_request_ms": round((done - loading) * 1000, 1),
            "status": first["statusCode"]}
    cold["total_ms"] = round(cold["import_ms"] + cold["first_request_ms"], 1)
    if count == 0:
        return {"cold_start": cold}
    answers: list[int] = []
    with store_reads_timed() as store_ms:
        samples = timings_ms(lambda: answers.append(handler(events[1 + len(answers)], context)["statusCode"]),
                             count, warmup=0)
    if set(answers) | {first["statusCode"]} != {200} or len(store_ms) != len(samples):
        raise RuntimeError(f"API benchmark: answers {sorted(set(answers))}, {len(store_ms)} store reads")
    reads = np.array(store_ms)
    return {**summary(samples), "store": summary(reads), "without_store": summary(np.asarray(samples) - reads),
            "cold_start": cold}


def read_catalogue_from(folder: Path) -> None:
    """The catalogue repository reads `folder / key` instead of S3 (what a local copy of the bucket holds)."""
    import hashlib
    from typing import IO

    from pulse.catalog.store import S3CatalogRepository

    def get(self: S3CatalogRepository, key: str) -> bytes | None:
        path = folder / key
        return path.read_bytes() if path.is_file() else None

    def stream(self: S3CatalogRepository, key: str, sink: IO[bytes]) -> str | None:
        path = folder / key
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
        sink.flush()
        return digest.hexdigest()

    S3CatalogRepository._get = get  # type: ignore[method-assign]
    S3CatalogRepository._stream = stream  # type: ignore[method-assign]


if __name__ == "__main__":
    print(json.dumps(container_main(sys.argv[1:])))
