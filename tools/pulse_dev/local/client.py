"""What the developer tools share when they drive the local stack from outside: progress bars, a small client
for the HTTP API, publishing the MovieLens catalogue, waiting for the API to reflect a change."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pulse.catalog.build import publish_catalog
from pulse.catalog.store import S3CatalogRepository
from pulse_dev.local.runtime import LocalRuntime
from pulse_dev.movielens import Movie, Rating, catalog_record


@dataclass
class Progress:
    """tqdm if present (the CLI), silent otherwise (tests)."""

    enabled: bool = True

    def bar(self, total: int, description: str, unit: str = "ev") -> Any:
        if not self.enabled:
            return _Silent()
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit=unit)


class _Silent:
    n = 0

    def update(self, count: int) -> None:
        self.n += count

    def set_postfix_str(self, text: str) -> None:
        return None

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class Api:
    def __init__(self, base_url: str):
        self.base_url = base_url

    def event_count(self, user: str) -> int:
        try:
            return int(self.get(f"/users/{user}/profile")["event_count"])
        except urllib.error.HTTPError as error:
            if error.code == 404:  # nothing recorded yet
                return 0
            raise

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        url = f"{self.base_url}{urllib.parse.quote(path)}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer


def publish(runtime: LocalRuntime, movies: dict[str, Movie], train: Sequence[Rating], progress: Progress
            ) -> dict[str, Any]:
    from pulse_encoder import load_encoder

    counts: dict[str, int] = defaultdict(int)
    for rating in train:  # popularity for the API's fallback: known before the test events
        counts[rating.item_id] += 1
    lines = [json.dumps(catalog_record(movie, counts[movie.item_id])) for movie in movies.values()]
    started = time.perf_counter()
    with progress.bar(len(lines), "catalogue (embed)", unit="item") as bar:
        result = publish_catalog(lines, load_encoder(), S3CatalogRepository(runtime.stack.name_of("AWS::S3::Bucket")),
                                 progress=bar.update)
    seconds = time.perf_counter() - started
    return {"version": result.version, "items": result.items, "seconds": round(seconds, 1),
            "items_per_second": round(result.items / seconds, 1)}


def wait_reflected(api: Api, expected: list[tuple[str, int]], put_at: float, timeout: float = 30.0) -> list[float]:
    """Seconds from PutRecords until each user's profile shows the expected event count."""
    waiting = dict(expected)
    seen_at: list[float] = []
    deadline = time.perf_counter() + timeout
    while waiting and time.perf_counter() < deadline:
        for user, count in list(waiting.items()):
            if api.event_count(user) >= count:
                seen_at.append(time.perf_counter() - put_at)
                del waiting[user]
        time.sleep(0.02)
    if waiting:
        raise TimeoutError(f"{len(waiting)} users' events not reflected within {timeout} s")
    return seen_at


def wait_until_serving(api: Api, version: str, timeout: float = 60.0) -> None:
    """Until the API's /health reports this catalogue version."""
    deadline = time.monotonic() + timeout
    while api.get("/health").get("catalog_version") != version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not serve catalogue {version} within {timeout} s")
        time.sleep(0.05)
