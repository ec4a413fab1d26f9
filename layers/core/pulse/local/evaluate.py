"""`pulse eval` and `pulse demo`: MovieLens-100K replayed in time order through the real pipeline on the local stack.

Leave-last-out, full ranking, exclude seen: every rating but each user's last goes through Kinesis -> ingest ->
DynamoDB; then, for each user, the API is asked for the top 10 *as of* their last rating's time (`at`), and the
held-out item is looked for. A user's interest depends only on their own events, so replaying everything but
the held-out ratings first and asking afterwards is the same as asking just before each last event — without
stopping the stream 943 times. The popularity baseline counts ratings up to that same moment.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pulse.catalog_build import publish_catalog
from pulse.catalog_store import S3CatalogRepository
from pulse.evaluation import PopularityBaseline, hit_by_activity, plot_report, results_table, summarize
from pulse.local.runtime import LocalRuntime
from pulse.movielens import Movie, Rating, catalog_record, leave_last_out, load_movies, load_ratings, rating_event

SHIFT_PAIRS = (("Drama", "Horror"), ("Comedy", "Sci-Fi"), ("Action", "Romance"), ("Romance", "Children's"))


@dataclass
class EvalOptions:
    half_lives: str | None = None
    blend_weights: str | None = None
    type_weights: str | None = None
    batch_size: int | None = None  # None: the template's IngestBatchSize
    out_dir: Path = Path(".pulse")
    shift_users_per_pair: int = 2
    shift_steps: int = 10
    max_users: int | None = None  # a quick run on the users with the smallest ids (tests)

    def parameters(self) -> dict[str, str]:
        """Template parameter overrides (as `sam deploy --parameter-overrides` would pass them)."""
        # RecentItems covers every MovieLens user's whole history (at most 737 ratings): exclude_seen is exact.
        chosen = {"IngestBatchSize": str(self.batch_size or ""), "RecentItems": "1000", "HalfLives": self.half_lives,
                  "BlendWeights": self.blend_weights, "TypeWeights": self.type_weights}
        return {name: value for name, value in chosen.items() if value}


@dataclass
class Progress:
    """tqdm if present (the CLI), silent otherwise (tests)."""

    enabled: bool = True

    def bar(self, total: int, description: str) -> Any:
        if not self.enabled:
            return _Silent()
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit="ev")


class _Silent:
    n = 0

    def update(self, count: int) -> None:
        self.n += count

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
            return json.loads(response.read())


def run_evaluation(options: EvalOptions, progress: Progress | None = None,
                   after_replay: Callable[[LocalRuntime, dict[str, Movie], list[Rating]], Any] | None = None
                   ) -> dict[str, Any]:
    progress = progress or Progress()
    options.out_dir.mkdir(parents=True, exist_ok=True)
    movies = {movie.item_id: movie for movie in load_movies()}
    ratings = load_ratings()
    if options.max_users:
        kept = set(sorted({rating.user_id for rating in ratings}, key=int)[: options.max_users])
        ratings = [rating for rating in ratings if rating.user_id in kept]
    train, held_out = leave_last_out(ratings)
    runtime = LocalRuntime(aws_port=0, api_port=0, parameters=options.parameters()).start()
    try:
        report: dict[str, Any] = {"dataset": "MovieLens-100K", "ratings": len(ratings), "users": len(held_out),
                                  "items": len(movies), "parameters": options.parameters()}
        report["catalog"] = publish(runtime, movies, train, progress)
        report["replay"] = replay(runtime, [rating_event(r) for r in train], progress, "replay (all but last)")
        api = Api(runtime.api_url)
        results, per_user = ranking_quality(api, movies, train, held_out, ratings, progress)
        report["results"] = [asdict(result) | {"per_user_hits": None} for result in results]
        report["activity"] = hit_by_activity_table(results, per_user)
        shift_curve, freshness = interest_shift(runtime, api, movies, options, progress)
        report["interest_shift"] = shift_curve
        report["freshness_seconds"] = {"samples": len(freshness), "p50": percentile(freshness, 50),
                                       "p95": percentile(freshness, 95)}
        report["replay_held_out"] = replay(runtime, [rating_event(r) for r in held_out.values()], progress,
                                           "replay (last ratings)")
        if after_replay is not None:
            report["users_now"] = after_replay(runtime, movies, ratings)
        options.out_dir.mkdir(parents=True, exist_ok=True)
        plot_report(options.out_dir / "eval.png", results, per_user["activity"],
                    {"mean share of new genre in top 10": shift_curve["mean_share_by_step"]}, freshness)
        report["table"] = results_table(results)
        report["picture"] = str(options.out_dir / "eval.png")
        return report
    finally:
        runtime.stop()


def publish(runtime: LocalRuntime, movies: dict[str, Movie], train: Sequence[Rating], progress: Progress) -> dict:
    from pulse_encoder import load_encoder

    counts: dict[str, int] = defaultdict(int)
    for rating in train:  # popularity for the API's fallback: known before the test events
        counts[rating.item_id] += 1
    lines = [json.dumps(catalog_record(movie, counts[movie.item_id])) for movie in movies.values()]
    started = time.perf_counter()
    with progress.bar(len(lines), "catalogue (embed)") as bar:
        result = publish_catalog(lines, load_encoder(), S3CatalogRepository(runtime.stack.name_of("AWS::S3::Bucket")),
                                 progress=bar.update)
    seconds = time.perf_counter() - started
    return {"version": result.version, "items": result.items, "seconds": round(seconds, 1),
            "items_per_second": round(result.items / seconds, 1)}


def replay(runtime: LocalRuntime, events: list[dict[str, Any]], progress: Progress, label: str) -> dict:
    """PutRecords in time order while the poller ingests; the bar follows what the ingest function handled."""
    poller = runtime.pollers[0]
    start_records = poller.stats.records
    started = time.perf_counter()
    with progress.bar(len(events), label) as bar:
        for start in range(0, len(events), 5000):
            runtime.put_events(events[start:start + 5000])
            bar.update(max(0, min(len(events), poller.stats.records - start_records) - bar.n))
        while True:
            try:
                runtime.wait_until_ingested(timeout=1.0)
                break
            except TimeoutError:
                bar.update(max(0, min(len(events), poller.stats.records - start_records) - bar.n))
        bar.update(len(events) - bar.n)
    seconds = time.perf_counter() - started
    return {"events": len(events), "seconds": round(seconds, 1), "events_per_second": round(len(events) / seconds, 1),
            "invocations": poller.stats.invocations}


def ranking_quality(api: Api, movies: dict[str, Movie], train: Sequence[Rating], held_out: dict[str, Rating],
                    ratings: Sequence[Rating], progress: Progress):
    seen: dict[str, set[str]] = defaultdict(set)
    for rating in train:
        seen[rating.user_id].add(rating.item_id)
    baseline = PopularityBaseline(list(movies))
    test_of = {(r.user_id, r.item_id, r.ts): r for r in held_out.values()}
    lists = {"pulse": [], "popularity": []}
    shares, targets, activity, strategies = [], [], [], defaultdict(int)
    with progress.bar(len(held_out), "asking the API (top 10 as of each last rating)") as bar:
        for rating in ratings:  # time order: the baseline knows exactly the ratings before each test event
            if (rating.user_id, rating.item_id, rating.ts) in test_of:
                answer = api.get(f"/users/{rating.user_id}/recommendations", k=10, exclude_seen="true", at=rating.ts)
                strategies[answer["strategy"]] += 1
                lists["pulse"].append([item["item_id"] for item in answer["items"]])
                lists["popularity"].append(baseline.top_k(10, exclude=seen[rating.user_id]))
                shares.append(baseline.shares())
                targets.append(rating.item_id)
                activity.append(len(seen[rating.user_id]))
                bar.update(1)
            baseline.add(rating.item_id)
    results = [summarize(name, recommended, targets, len(movies), shares) for name, recommended in lists.items()]
    return results, {"activity": activity, "strategies": dict(strategies)}


def hit_by_activity_table(results, per_user) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        for label, hit, users in hit_by_activity(result.per_user_hits, per_user["activity"]):
            rows.append({"method": result.name, "events_before_test": label, "hit_at_10": hit, "users": users})
    return rows


def interest_shift(runtime: LocalRuntime, api: Api, movies: dict[str, Movie], options: EvalOptions,
                   progress: Progress) -> tuple[dict[str, Any], list[float]]:
    """Users with a settled taste for genre A switch to genre B, one rating every 10 minutes: after each event,
    the share of the top 10 in genre B. Also end-to-end freshness: PutRecords -> the API reflects the event."""
    def only(genre: str, not_genre: str) -> list[str]:
        return [movie.item_id for movie in movies.values() if genre in movie.genres and not_genre not in movie.genres]

    start = 893_000_000.0  # after MovieLens's last rating: these users are new
    users = []  # (user, old genre, new genre, items of the new genre, events so far)
    history: list[dict[str, Any]] = []
    for pair_index, (old, new) in enumerate(SHIFT_PAIRS):
        old_items, new_items = only(old, new), only(new, old)
        for copy in range(options.shift_users_per_pair):
            user = f"shift-{pair_index}-{copy}"
            taste = old_items[copy * 5: copy * 5 + 20]
            users.append((user, old, new, new_items[copy * 5:], len(taste)))
            history.extend({"event_id": f"{user}-h{step}", "user_id": user, "type": "rate", "item_id": item,
                            "value": 5, "ts": start + step * 86400} for step, item in enumerate(taste))
    runtime.put_events(history)
    runtime.wait_until_ingested()
    switch = start + 30 * 86400
    shares: list[list[float]] = []
    freshness: list[float] = []
    with progress.bar(options.shift_steps, "interest shift (events after the switch)") as bar:
        for step in range(options.shift_steps):
            now = switch + step * 600
            events = [{"event_id": f"{user}-s{step}", "user_id": user, "type": "rate", "value": 5, "ts": now,
                       "item_id": new_items[step % len(new_items)]} for user, _, _, new_items, _ in users]
            put_at = time.perf_counter()
            runtime.put_events(events)
            freshness.extend(wait_reflected(api, [(user, before + step + 1) for user, _, _, _, before in users],
                                            put_at))
            step_shares = []
            for user, _, new, _, _ in users:
                answer = api.get(f"/users/{user}/recommendations", k=10, exclude_seen="true", at=now + 1)
                items = [item["item_id"] for item in answer["items"]]
                step_shares.append(sum(new in movies[item].genres for item in items) / max(1, len(items)))
            shares.append(step_shares)
            bar.update(1)
    mean_share = [round(float(np.mean(step)), 3) for step in shares]
    needed = [next((step + 1 for step, row in enumerate(shares) if row[index] > 0.5), None)
              for index in range(len(users))]
    return {"pairs": [f"{old} -> {new}" for old, new in SHIFT_PAIRS], "users": len(users),
            "mean_share_by_step": mean_share, "events_until_majority": needed,
            "median_events_until_majority": float(np.median([n for n in needed if n is not None]))
            if any(n is not None for n in needed) else None}, freshness


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


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None
