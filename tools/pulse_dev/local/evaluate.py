"""`pulse eval` and `pulse demo`: MovieLens-100K replayed in time order through the real pipeline on the local stack.

Leave-last-out, full ranking, exclude seen. The ratings go through Kinesis -> ingest -> DynamoDB in time order,
one period (a simulated week by default) at a time. At the start of each period the training job runs on the
event archive *as it stands* (events before that moment only) and publishes a hybrid catalogue version, which
the API and the ingest then pick up by themselves, as in production. After a period is replayed, the users whose
last rating falls in it are asked for the top 10 *as of* that rating's time (`at`), and the held-out item is
looked for; the held-out ratings then enter the stream too (later trainings see them, as they would).

One run scores four item spaces on the same stored interest: the deployed hybrid through the API, and its text
and collaborative blocks alone (the stored interest vector restricted to the block, scored by the same
`pulse.serving.recommend`), beside the popularity of the ratings up to that moment.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pulse.catalog.store import S3CatalogRepository
from pulse.catalog.version import CatalogVersion, unit_rows
from pulse.interest.model import blend
from pulse.interest.store import DynamoInterestStore
from pulse.serving.recommend import recommend, scale_vectors
from pulse.settings import TrainSettings
from pulse.training.job import deployment_options, train_catalog
from pulse_dev.evaluation import (
    MethodResult,
    PopularityBaseline,
    hit_by_activity,
    plot_report,
    results_table,
    summarize,
)
from pulse_dev.local.client import Api, Progress, publish, wait_reflected, wait_until_serving
from pulse_dev.local.runtime import LocalRuntime
from pulse_dev.movielens import Movie, Rating, leave_last_out, load_movies, load_ratings, rating_event
from pulse_dev.stats import percentile

SHIFT_PAIRS = (("Drama", "Horror"), ("Comedy", "Sci-Fi"), ("Action", "Romance"), ("Romance", "Children's"))
DAY = 86400.0
FAMILIES = ("hybrid (API)", "text-only", "collab-only")


@dataclass
class EvalOptions:
    """The defaults are the template's: nothing pinned, so each training chooses the interest settings and the
    block weights on its held-out events, and its gate decides whether it publishes; one training a simulated
    day, as the template schedules it. Every flag pins a setting, as a template parameter would."""

    half_lives: str | None = None
    blend_weights: str | None = None
    rating_weighting: str | None = None
    type_weights: str | None = None
    text_weight: float | None = None
    collab_weight: float | None = None
    popularity_weight: float | None = None
    collab_dim: int | None = None
    retrain_days: float = 1.0  # 0: never train (the text-only catalogue throughout)
    # "honest": trainings during the replay, each test question asked before its rating enters the stream;
    # "replay-then-train": every rating but the held-out ones replayed, one scheduled training, then the questions
    protocol: str = "honest"
    overrides: dict[str, str] = field(default_factory=dict)  # any other template parameter (--parameter)
    batch_size: int | None = None  # None: the template's IngestBatchSize
    out_dir: Path = Path(".pulse")
    shift_users_per_pair: int = 2
    shift_steps: int = 10
    max_users: int | None = None  # a quick run on the users with the smallest ids (tests)

    def parameters(self) -> dict[str, str]:
        """Template parameter overrides (as `sam deploy --parameter-overrides` would pass them)."""
        # RecentItems covers every MovieLens user's whole history (at most 737 ratings): exclude_seen is exact.
        # The API and the ingest look for a new catalogue version every half second (a retrain each week).
        chosen = {"IngestBatchSize": self.batch_size, "RecentItems": 1000,
                  "CatalogCheckSeconds": 0.5, "HalfLives": self.half_lives, "BlendWeights": self.blend_weights,
                  "TypeWeights": self.type_weights, "RatingWeighting": self.rating_weighting,
                  "TextWeight": self.text_weight, "CollabWeight": self.collab_weight, "CollabDim": self.collab_dim,
                  "PopularityWeight": self.popularity_weight}
        return {**{name: str(value) for name, value in chosen.items() if value is not None}, **self.overrides}


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
        timeline = Timeline(runtime, options, movies, held_out, progress)
        results, per_user = timeline.run(ratings)
        report["replay"] = timeline.replay_stats()
        report["trainings"] = timeline.trainings
        report["results"] = [asdict(result) | {"per_user_hits": None} for result in results]
        report["strategies"] = per_user["strategies"]
        report["activity"] = hit_by_activity_table(results, per_user)
        api = Api(runtime.api_url)
        shift_curve, freshness = interest_shift(runtime, api, movies, options, progress)
        report["interest_shift"] = shift_curve
        report["freshness_seconds"] = {"samples": len(freshness), "p50": percentile(freshness, 50),
                                       "p95": percentile(freshness, 95)}
        if after_replay is not None:
            report["users_now"] = after_replay(runtime, movies, ratings)
        decisions = {kind: [t["cutoff"] for t in timeline.trainings if t["decision"] == kind]
                     for kind in ("published", "refused")}
        plot_report(options.out_dir / "eval.png", results, per_user["activity"],
                    {"mean share of new genre in top 10": shift_curve["mean_share_by_step"]}, freshness,
                    {"times": per_user["times"], "start": ratings[0].ts, **decisions})
        report["table"] = results_table(results)
        report["picture"] = str(options.out_dir / "eval.png")
        return report
    finally:
        runtime.stop()


@dataclass
class Query:
    rating: Rating
    popular: list[str]  # the popularity baseline's top 10 at that moment
    shares: Mapping[str, float]
    seen: int


class Timeline:
    """The time-ordered replay with periodic retraining and the test queries of each period (module doc)."""

    def __init__(self, runtime: LocalRuntime, options: EvalOptions, movies: dict[str, Movie],
                 held_out: dict[str, Rating], progress: Progress):
        self.runtime, self.options, self.movies, self.progress = runtime, options, movies, progress
        self.test_keys = {(r.user_id, r.item_id, r.ts) for r in held_out.values()}
        self.api = Api(runtime.api_url)
        self.bucket = runtime.stack.name_of("AWS::S3::Bucket")
        self.repository = S3CatalogRepository(self.bucket)
        self.store = DynamoInterestStore(runtime.stack.name_of("AWS::DynamoDB::Table"), ttl_days=3650)
        # the deployment's settings, as its training function gets them from the template
        self.settings = TrainSettings.from_env(runtime.stack.function("TrainFunction").environment)
        self.trainings: list[dict[str, Any]] = []
        self._versions: dict[str, CatalogVersion] = {}
        self._seen_items: dict[str, set[str]] = defaultdict(set)
        self._replayed, self._replay_seconds = 0, 0.0

    def run(self, ratings: Sequence[Rating]) -> tuple[list[MethodResult], dict[str, Any]]:
        once = self.options.protocol == "replay-then-train"
        period = self.options.retrain_days * DAY if self.options.retrain_days > 0 and not once else math.inf
        start = ratings[0].ts
        by_period: dict[int, list[Rating]] = defaultdict(list)
        for rating in ratings:
            by_period[0 if period == math.inf else int((rating.ts - start) // period)].append(rating)
        baseline = PopularityBaseline(list(self.movies))
        lists: dict[str, list[list[str]]] = {name: [] for name in (*FAMILIES, "popularity")}
        queries: list[Query] = []
        strategies: dict[str, int] = defaultdict(int)
        with self.progress.bar(len(ratings), "replay, trainings, questions") as bar:
            for number in sorted(by_period):
                if number > 0:
                    self.retrain(start + number * period)
                    bar.set_postfix_str(f"{len(self.trainings)} trainings")
                asked: list[Query] = []
                for rating in by_period[number]:  # time order: the baseline knows exactly the ratings before
                    if (rating.user_id, rating.item_id, rating.ts) in self.test_keys:
                        seen = self._seen_items[rating.user_id]
                        asked.append(Query(rating, baseline.top_k(10, exclude=seen), baseline.shares(), len(seen)))
                    else:
                        self._seen_items[rating.user_id].add(rating.item_id)
                    baseline.add(rating.item_id)
                held = {id(query.rating) for query in asked}
                self._replay([rating_event(r) for r in by_period[number] if id(r) not in held])
                if self.options.protocol == "replay-then-train":  # the schedule's run after the whole replay
                    self.retrain(by_period[number][-1].ts + 1)
                for query in asked:
                    for name, items in self.ask(query.rating, strategies).items():
                        lists[name].append(items)
                    lists["popularity"].append(query.popular)
                queries.extend(asked)
                self.runtime.put_events([rating_event(query.rating) for query in asked])
                bar.update(len(by_period[number]))
        self.runtime.wait_until_ingested()
        targets = [query.rating.item_id for query in queries]
        shares = [query.shares for query in queries]
        results = [summarize(name, lists[name], targets, len(self.movies), shares)
                   for name in (*FAMILIES, "popularity")]
        return results, {"activity": [query.seen for query in queries], "strategies": dict(strategies),
                         "times": [query.rating.ts for query in queries]}

    def _replay(self, events: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        self.runtime.put_events(events)
        self.runtime.wait_until_ingested()
        self._replay_seconds += time.perf_counter() - started
        self._replayed += len(events)

    def replay_stats(self) -> dict[str, Any]:
        seconds = self._replay_seconds or 1e-9
        return {"events": self._replayed, "seconds": round(seconds, 1),
                "events_per_second": round(self._replayed / seconds, 1),
                "invocations": self.runtime.pollers[0].stats.invocations}

    def retrain(self, cutoff: float) -> None:
        """The training job on the archive as it stands, events before `cutoff` only; then wait until the API
        serves the new version and the ingest's next check (CatalogCheckSeconds) will see it too."""
        self.runtime.wait_until_ingested()
        self.runtime.archiver.drain()
        today = dt.datetime.now(dt.UTC).date()  # the replay's events all arrived today (or yesterday)
        # the deployed window (TrainingDays) in event time: arrival days say nothing of when replayed events happened
        options = deployment_options(self.settings) | {"days": 2}
        # (replay-then-train: everything arrived within the window, as a replay through a deployment would)
        since = None if self.options.protocol == "replay-then-train" else cutoff - self.settings.training_days * DAY
        result = train_catalog(self.repository, self.bucket, until=today, before=cutoff, seed=0, since=since,
                               **options)
        if result.published:
            published = time.monotonic()
            assert result.version is not None  # a published training names its version
            wait_until_serving(self.api, result.version)
            check = float(self.runtime.stack.parameters.get("CatalogCheckSeconds", 2))
            time.sleep(max(0.0, published + check + 0.1 - time.monotonic()))
        report = result.report
        self.trainings.append({"events_before": dt.datetime.fromtimestamp(cutoff, dt.UTC).isoformat(),
                               "cutoff": cutoff, "decision": result.decision, "reason": result.reason,
                               "version": result.version, "events": result.events, "users": result.users,
                               "warm_items": result.warm_items, "seconds": round(result.seconds["total"], 2),
                               "read_archive_seconds": round(result.seconds["read_archive"], 2),
                               "held_out_users": report["data"]["held_out_users"],
                               "serving_ndcg": report.get("serving", {}).get("ndcg_at_10"),
                               "candidate_ndcg": report.get("candidate", {}).get("ndcg_at_10"),
                               "settings": report.get("settings", {}).get("chosen"),
                               "blocks": [report["settings"]["text_weight"], report["settings"]["collab_weight"]]
                               if "settings" in report else None})

    def ask(self, rating: Rating, strategies: dict[str, int]) -> dict[str, list[str]]:
        """The API's top 10 (the deployed hybrid) and the same stored interest scored on each block alone."""
        answer = self.api.get(f"/users/{rating.user_id}/recommendations", k=10, exclude_seen="true", at=rating.ts)
        strategies[answer["strategy"]] += 1
        lists = {"hybrid (API)": [item["item_id"] for item in answer["items"]]}
        catalog = self._version(answer["catalog_version"])
        user = self.store.get(rating.user_id)
        config = self.settings.serving(catalog.learned_settings())
        vectors = None if user is None else scale_vectors(user, catalog, rating.ts, config.half_lives,
                                                          config.type_weights)
        text_dim = catalog.text_dim
        blocks = {"text-only": slice(0, text_dim),
                  "collab-only": slice(text_dim, catalog.dim) if catalog.is_hybrid else slice(0, text_dim)}
        for name, block in blocks.items():  # before the first training both are the text catalogue
            view = replace(catalog, embeddings=np.ascontiguousarray(unit_rows(catalog.embeddings[:, block]),
                                                                    dtype=np.float32), text_to_collab=None)
            query = None if vectors is None else blend({scale: vector[block] for scale, vector in vectors.items()},
                                                       config.blend_weights)
            result = recommend(view, user, k=10, at=rating.ts, half_lives=config.half_lives,
                               blend_weights=config.blend_weights, exclude_seen=True,
                               min_strength=config.min_strength, query=query,
                               popularity_weight=config.popularity_weight)
            lists[name] = [item.item_id for item in result.items]
        return lists

    def _version(self, version: str) -> CatalogVersion:
        if version not in self._versions:
            self._versions[version] = self.repository.load(version, None)
        return self._versions[version]


def hit_by_activity_table(results: Sequence[MethodResult], per_user: Mapping[str, Any]
                          ) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        for label, hit, users in hit_by_activity(result.per_user_hits, per_user["activity"]):
            rows.append({"method": result.name, "events_before_test": label, "hit_at_10": hit, "users": users})
    return rows


def interest_shift(runtime: LocalRuntime, api: Api, movies: dict[str, Movie], options: EvalOptions,
                   progress: Progress) -> tuple[dict[str, Any], list[float]]:
    """Users with a settled taste for genre A (20 ratings over the past day) switch to genre B, one rating every
    10 minutes: after each event, the share of the top 10 in genre B. Also end-to-end freshness: PutRecords ->
    the API reflects the event."""
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
                            "value": 5, "ts": start + step * 3600} for step, item in enumerate(taste))
    runtime.put_events(history)
    runtime.wait_until_ingested()
    switch = start + 20 * 3600
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
