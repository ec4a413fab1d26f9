"""`pulse train` and the scheduled training function: the archive's recent events -> a candidate item space ->
published only if it deserves it, with the interest settings that suit it.

1. Read the archive window (the newest max_events events of the last `days` days); the serving version's items,
   text and filters are the base.
2. Enough data? (events, users, warm items; TrainingPolicy). If not: refused, the serving version serves on.
3. Hold out each user's latest event, among the events newer than what the serving version learned from; train a
   candidate on the other events.
4. Choose the interest settings (half-lives, blend, rating weighting, block weights, then the trending prior's
   half-life and weight) on one half of the held-out users; judge candidate and serving version on the other
   half (pulse.training.space_quality).
5. Publish unless the candidate is worse beyond the tolerance (and the difference is clear of noise); the
   published version is then trained on every event of the window, with the chosen settings travelling in it.
Every run writes reports/training/<time>.json beside the catalogue; `force` publishes whatever the gate says.

Users' stored interest does not depend on the space (pulse.interest.model): a new space serves every user at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pulse import aws
from pulse.catalog.store import S3CatalogRepository
from pulse.catalog.version import CatalogVersion, hybrid_vectors
from pulse.errors import PulseError
from pulse.events.archive import ArchiveReadStats, read_archive
from pulse.events.behaviour import BehaviourEvent
from pulse.settings import Settings, TrainingPolicy, TrainSettings
from pulse.training.collaborative import Interactions, SpaceConfig, TrainedSpace, train
from pulse.training.space_quality import (
    BLOCK_CHOICES,
    POPULARITY_WEIGHT_CHOICES,
    TRENDING_HALF_LIFE_CHOICES,
    HeldOut,
    Interaction,
    InterestModel,
    Quality,
    Scorer,
    held_out_slice,
    interest_grid,
    paired_difference,
    popularity_quality,
    trending_at,
    trending_prior,
)

REPORT_PREFIX = "reports/training/"
MAX_SCORED_CELLS = 10_000_000  # held-out users x items per cached product (80 MB each)
MAX_TUNING_USERS = 500  # enough to choose settings clear of noise; the grid's cost grows with it


class TrainingError(PulseError, RuntimeError):
    """Training cannot even start (no catalogue published yet)."""


@dataclass
class TrainingResult:
    decision: str  # "published" | "refused"
    reason: str
    version: str | None
    base_version: str
    events: int
    users: int
    warm_items: int
    items: int
    seconds: dict[str, float]
    archive: ArchiveReadStats
    report: dict[str, Any] = field(default_factory=dict)
    report_key: str | None = None
    peak_bytes_estimate: int = 0

    @property
    def published(self) -> bool:
        return self.decision == "published"


def train_catalog(repository: S3CatalogRepository, archive_bucket: str, *,
                  days: int = TrainSettings.default("training_days"),
                  max_events: int = TrainSettings.default("training_max_events"),
                  until: dt.date | None = None, before: float | None = None, since: float | None = None,
                  config: SpaceConfig | None = None,
                  seed: int = 0, policy: TrainingPolicy | None = None, serving_settings: Settings | None = None,
                  pinned: InterestModel | None = None, pinned_names: frozenset[str] = frozenset(),
                  pinned_blocks: tuple[float, float] | None = None,
                  clock: Callable[[], float] = time.time) -> TrainingResult:
    """`before`/`since`: only events that happened in [since, before) (replays and backfills, whose arrival day
    says nothing of when the events happened).
    `serving_settings`: the pulse.settings.Settings the deployment runs (what the serving version is judged
    with); `pinned`/`pinned_names`/`pinned_blocks`: what the deployment fixed, left out of the search."""
    config = config or SpaceConfig()
    policy = policy or TrainingPolicy()
    started = time.perf_counter()
    base_version = repository.current_version()
    if base_version is None:
        raise TrainingError("no catalogue published yet: publish one (pulse catalog build) before training")
    base = repository.load(base_version, None)
    state = repository.load_training_state(base_version) if base.is_hybrid else None
    text = state["text"] if state is not None else base.text_block().astype(np.float64)
    previous = None
    if state is not None and base.text_to_collab is not None and state["collab"].shape[1] == config.dim:
        previous = TrainedSpace(vectors=base.embeddings, collab=state["collab"], warm_mask=state["warm"],
                                text_map=base.text_to_collab, rotation=None, config=config, seed=-1)

    last_day = until or dt.datetime.fromtimestamp(clock(), dt.UTC).date()
    stats = ArchiveReadStats()
    events, capped = _newest_events(read_archive(archive_bucket, last_day - dt.timedelta(days=days - 1), last_day,
                                                 stats=stats, newest_first=True),
                                    base.index, max_events, before=before, since=since)
    seconds = {"read_archive": time.perf_counter() - started}
    users = {event.user for event in events}
    max_users = max(1, min(policy.max_held_out_users, MAX_SCORED_CELLS // max(1, len(base))))
    queries, tuning, earlier = _held_out(events, len(base), max_users, base.trained_until)
    report: dict[str, Any] = {
        "started_at": dt.datetime.fromtimestamp(clock(), dt.UTC).isoformat(), "forced": policy.force,
        "policy": asdict(policy) | {"min_warm_items": policy.min_warm_items or config.dim},
        "data": {"events": len(events), "users": len(users), "items": len(base), "days": days,
                 "max_events": max_events, "window_capped": capped,
                 "first_event": min((e.ts for e in events), default=None),
                 "until": last_day.isoformat(), "events_before": before, "held_out_users": len(queries),
                 "tuning_users": len(tuning),
                 "archive": {"lines": stats.lines, "invalid": stats.invalid, "duplicates": stats.duplicates}},
        "serving": {"version": base_version, "space": "hybrid" if base.is_hybrid else "text",
                    "trained_until": base.trained_until},
    }

    def finish(decision: str, reason: str, version: str | None, warm: int, peak: int = 0) -> TrainingResult:
        seconds["total"] = time.perf_counter() - started
        report.update({"decision": decision, "reason": reason, "published_version": version,
                       "seconds": {name: round(value, 3) for name, value in seconds.items()}})
        report["data"]["warm_items"] = warm
        key = f"{REPORT_PREFIX}{dt.datetime.fromtimestamp(clock(), dt.UTC).strftime('%Y-%m-%dT%H%M%S.%fZ')}.json"
        aws.client("s3").put_object(Bucket=repository.bucket, Key=key,
                                    Body=json.dumps(report, indent=1, default=_plain).encode())
        return TrainingResult(decision, reason, version, base_version, len(events), len(users), warm, len(base),
                              seconds, stats, report, key, peak)

    shortfall = _shortfall(policy, config, len(events), len(users), len(queries))
    if shortfall and not policy.force:
        return finish("refused", f"not enough data: {shortfall}", None, 0)
    if not events:
        return finish("refused", "the archive window holds no event of a catalogue item", None, 0)

    mark = time.perf_counter()
    candidate = train(_interactions(earlier or events), len(base), text, config, seed=seed, previous=previous)
    seconds["candidate"] = time.perf_counter() - mark
    warm = int(candidate.warm_mask.sum())
    if warm < (policy.min_warm_items or config.dim) and not policy.force:
        report["data"]["warm_items"] = warm
        return finish("refused", f"not enough data: {warm} items used together < "
                                 f"{policy.min_warm_items or config.dim} (the collaborative dimensions)", None, warm)

    mark = time.perf_counter()
    serving_model = _serving_model(base, serving_settings)
    choice, judged = _choose_and_judge(queries, tuning, base, serving_model, text, candidate.collab, pinned,
                                       pinned_names, pinned_blocks, earlier)
    seconds["settings_and_gate"] = time.perf_counter() - mark
    report.update(judged)
    difference, error = judged["difference"]["ndcg_at_10"], judged["difference"]["standard_error"]
    worse = difference < -policy.tolerance and (error is None or difference < -1.64 * error)
    if worse and not policy.force:
        return finish("refused", f"the candidate is worse than serving {base_version}: NDCG@10 "
                                 f"{judged['candidate']['ndcg_at_10']:.4f} vs {judged['serving']['ndcg_at_10']:.4f} "
                                 f"(tolerance {policy.tolerance})", None, warm)

    mark = time.perf_counter()
    final = train(_interactions(events), len(base), text, config, seed=seed, previous=previous)
    model, (text_weight, collab_weight), trend_half_life = choice
    vectors = hybrid_vectors(text, final.collab, text_weight, collab_weight)
    trained_until = max(e.ts for e in events)
    trending = trending_prior(np.array([e.row for e in events]), np.array([e.ts for e in events]), len(base),
                              at=trained_until, half_life=trend_half_life)
    digest = hashlib.sha256(vectors.tobytes())
    digest.update(trending.tobytes())
    digest.update(base.encoder_fingerprint.encode())
    digest.update(json.dumps(model.as_dict(), sort_keys=True).encode())
    version = f"t-{digest.hexdigest()[:20]}"
    trained = replace(base, version=version, embeddings=vectors, text_to_collab=final.text_map.astype(np.float32),
                      text_weight=text_weight, collab_weight=collab_weight, created_at=clock(),
                      settings=model.as_dict() | {"trending_half_life": trend_half_life}, basis=version,
                      trained_until=trained_until, trending=trending)
    seconds["final"] = time.perf_counter() - mark
    repository.publish(trained, training_state={"text": text, "collab": final.collab, "warm": final.warm_mask},
                       space=_describe(config, seed, base_version, len(events), len(users), days, last_day, before))
    reason = "forced" if policy.force and (shortfall or worse) else (
        "not worse than the serving version" if base.is_hybrid else "the first learned space")
    if policy.force and shortfall:
        reason += f" (despite: {shortfall})"
    return finish("published", reason, version, int(final.warm_mask.sum()), final.peak_bytes_estimate)


def deployment_options(settings: TrainSettings, *, force: bool = False) -> dict[str, Any]:
    """train_catalog's keyword arguments for a deployment's pulse.settings.TrainSettings: its space, its policy, and
    what it pinned (left out of the settings search)."""
    return {"config": replace(SpaceConfig(), dim=settings.collab_dim, text_weight=settings.text_weight,
                              collab_weight=settings.collab_weight),
            "days": settings.training_days, "max_events": settings.training_max_events,
            "policy": replace(settings.training_policy, force=force),
            "serving_settings": settings,
            "pinned": InterestModel(dict(settings.half_lives), dict(settings.blend_weights),
                                    settings.rating_weighting, settings.popularity_weight),
            "pinned_names": settings.pinned,
            "pinned_blocks": (settings.text_weight, settings.collab_weight) if "blocks" in settings.pinned else None}


def _shortfall(policy: TrainingPolicy, config: SpaceConfig, events: int, users: int, held_out: int) -> str:
    missing = []
    if events < policy.min_events:
        missing.append(f"{events} events < {policy.min_events}")
    if users < policy.min_users:
        missing.append(f"{users} users < {policy.min_users}")
    if held_out < policy.min_held_out_users:
        missing.append(f"{held_out} users with a new event to hold out (and an earlier one) < "
                       f"{policy.min_held_out_users}")
    return "; ".join(missing)


def _newest_events(archived: Iterable[BehaviourEvent], index: Mapping[str, int], max_events: int, *,
                   before: float | None, since: float | None) -> tuple[list[Interaction], bool]:
    """The newest `max_events` item events of catalogue items (in [since, before) when given), in time order,
    from an archive read newest first: reading stops once enough are held and the archive has moved on to
    older objects. -> (events, whether the cap cut the window short)."""
    kept: list[Interaction] = []
    capped = False
    for event in archived:
        if len(kept) >= 2 * max_events:  # objects overlap in time a little: keep a margin, then stop
            capped = True
            break
        if event.item_id is None or event.item_id not in index or (before is not None and event.ts >= before) \
                or (since is not None and event.ts < since):
            continue
        kept.append(Interaction(event.user_id, index[event.item_id], event.ts, event.type, event.value))
    kept.sort(key=lambda e: e.ts)
    if len(kept) > max_events:
        capped = True
        kept = kept[-max_events:]
    return kept, capped


def _interactions(events: list[Interaction]) -> Interactions:
    numbers: dict[str, int] = {}
    return Interactions(np.array([numbers.setdefault(e.user, len(numbers)) for e in events], dtype=np.int64),
                        np.array([e.row for e in events], dtype=np.int64),
                        np.array([e.ts for e in events], dtype=np.float64))


def _serving_model(base: CatalogVersion, serving_settings: Settings | None) -> InterestModel:
    if serving_settings is None:
        serving_settings = Settings()
    config = serving_settings.serving(base.learned_settings())
    return InterestModel(dict(config.half_lives), dict(config.blend_weights), config.rating_weighting,
                         config.popularity_weight)


def _held_out(events: list[Interaction], n_items: int, max_users: int, trained_until: float | None
              ) -> tuple[HeldOut, HeldOut, list[Interaction]]:
    """-> (the gate's slice: users whose latest event the serving version has not learned from; the tuning
    slice: the most recent MAX_TUNING_USERS others, whose latest event it has — a candidate has seen neither;
    every other event, what the candidate is trained on)."""
    queries, earlier = held_out_slice(events, n_items, max_users=max_users)
    fresh = [p for p, at in enumerate(queries.times) if trained_until is None or at > trained_until]
    older = sorted(set(range(len(queries))) - set(fresh), key=lambda p: -queries.times[p])[:MAX_TUNING_USERS]
    return queries.subset(fresh), queries.subset(sorted(older)), earlier


def _choose_and_judge(queries: HeldOut, tuning: HeldOut, base: CatalogVersion, serving_model: InterestModel,
                      text: NDArray[Any], collab: NDArray[Any], pinned: InterestModel | None,
                      pinned_names: frozenset[str], pinned_blocks: tuple[float, float] | None,
                      earlier: list[Interaction]
                      ) -> tuple[tuple[InterestModel, tuple[float, float], float], dict[str, Any]]:
    """Settings chosen on the tuning users (NDCG@10), both versions judged on the held-out users the serving
    version has not seen. Without 100 tuning users (the first trainings), settings are chosen on one half of the
    held-out users and judged on the other (on all of them below 100: the report says so). First the interest
    settings and blocks, then, for those, the trending prior's half-life and weight, each user's prior as of
    their question. -> ((model, blocks, trending half-life), report)"""
    if len(tuning) >= 100:
        tune, judge = tuning, queries
        judged_on = (f"the {len(queries)} held-out users whose event the serving version has not seen; settings "
                     f"chosen on {len(tuning)} others")
    else:
        tune, judge = queries.halves() if len(queries) >= 100 else (queries, queries)
        judged_on = "the other half of the held-out users" if judge is not tune else \
            "the same users the settings were chosen on (fewer than 100)"
    grid = interest_grid(pinned, pinned_names)
    blocks = [pinned_blocks] if pinned_blocks else list(BLOCK_CHOICES)
    if not len(tune):  # nothing to learn settings from (a forced training): keep what serves
        grid, blocks = [serving_model], [pinned_blocks or (base.text_weight, base.collab_weight)
                                          if base.is_hybrid else pinned_blocks or BLOCK_CHOICES[0]]
    best: tuple[float, InterestModel, tuple[float, float]] | None = None
    scorers = {}
    for weights in blocks:
        scorer = scorers[weights] = Scorer(tune, hybrid_vectors(text, collab, *weights), base.available)
        for model in grid:
            ndcg = scorer.quality(replace(model, popularity_weight=0.0))
            if best is None or ndcg.ndcg > best[0]:
                best = (ndcg.ndcg, model, weights)
    assert best is not None
    _, model, weights = best
    rows = np.array([e.row for e in earlier], dtype=np.int64)
    times = np.array([e.ts for e in earlier], dtype=np.float64)
    popularity_weights = [pinned.popularity_weight] if pinned is not None and "popularity_weight" in pinned_names \
        else list(POPULARITY_WEIGHT_CHOICES) if len(tune) else [serving_model.popularity_weight]
    scorer = scorers[weights]  # its per-scale products are cached: each prior costs only the ranking
    tuned: dict[tuple[float, float], float] = {}
    for half_life in TRENDING_HALF_LIFE_CHOICES:
        prior = trending_at(rows, times, len(base), tune.times, half_life=half_life)
        tuned |= {(half_life, weight): scorer.quality(replace(model, popularity_weight=weight), prior).ndcg
                  for weight in popularity_weights}
    trend_half_life, popularity_weight = max(tuned, key=lambda key: (tuned[key], -key[1], key[0]))
    model = replace(model, popularity_weight=popularity_weight)
    candidate = Scorer(judge, scorer.items, base.available, trending_at(rows, times, len(base), judge.times,
                                                                   half_life=trend_half_life)).quality(model)
    serving = Scorer(judge, base.embeddings, base.available, base.trending).quality(serving_model)
    counts = np.bincount(rows, minlength=len(base))
    popular = popularity_quality(judge, counts, base.available)
    difference, error = paired_difference(candidate, serving)
    judged = {
        "settings": {"chosen": model.as_dict(), "text_weight": weights[0], "collab_weight": weights[1],
                     "trending_half_life": trend_half_life,
                     "searched": len(grid) * len(blocks) + len(tuned), "tuned_on_users": len(tune),
                     "tuned_ndcg_at_10": tuned[(trend_half_life, popularity_weight)]},
        "serving": {"version": base.version, "settings": serving_model.as_dict(), **_metrics(serving)},
        "candidate": {"settings": model.as_dict(), "text_weight": weights[0], "collab_weight": weights[1],
                      **_metrics(candidate)},
        "popularity": _metrics(popular),
        "judged_on": judged_on,
        "difference": {"ndcg_at_10": difference, "standard_error": error if math.isfinite(error) else None},
    }
    return (model, weights, trend_half_life), judged


def _metrics(quality: Quality) -> dict[str, Any]:
    return quality.as_dict()


def _describe(config: SpaceConfig, seed: int, base: str, events: int, users: int, days: int,
              last_day: dt.date, before: float | None) -> dict[str, Any]:
    return {"trained_on": {"events": events, "users": users, "days": days, "until": last_day.isoformat(),
                           "events_before": before},
            "base_version": base, "seed": seed,
            "config": {key: getattr(config, key) for key in config.__dataclass_fields__}}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
