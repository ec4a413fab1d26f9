"""Offline measurement of item spaces (text, collaborative, hybrid) under the decayed-sum user model.

Standard protocol on MovieLens-100K: the item space is trained on every rating except each user's last two;
each user's second-to-last rating is the validation event, the last one the test event. A user is asked
for the top 10 as of the event's time, from their own earlier ratings (for the test event that includes the
validation rating), seen items excluded, full ranking. Settings are chosen on validation only.

`python -m pulse_dev.offline_eval [--text /tmp/ml_text.npy]` prints the tables (about 40 s here).
"""

from __future__ import annotations

import argparse
import itertools
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pulse.catalog.version import hybrid_vectors
from pulse.events.behaviour import BehaviourEvent
from pulse.interest.model import (
    DEFAULT_TYPE_WEIGHTS,
    RATING_WEIGHTINGS,
    ScaleState,
    TypeWeights,
    blend,
    decay_to,
    fold_events,
)
from pulse.settings import Settings
from pulse.training.collaborative import Interactions, SpaceConfig, TrainedSpace, train
from pulse.training.space_quality import (
    POPULARITY_WEIGHT_CHOICES,
    TRENDING_HALF_LIFE_CHOICES,
    trending_at,
    trending_prior,
)
from pulse_dev.evaluation import K, MethodResult, PopularityShares, results_table, summarize
from pulse_dev.movielens import Movie, Rating, leave_last_out, load_movies, load_ratings

HOUR, DAY = 3600.0, 86400.0
MIN_STRENGTH: float = Settings.default("min_strength")  # the API's (PULSE_MIN_STRENGTH)
STAGES = ("valid", "test")


@dataclass
class Stage:
    """One query per user: their history before the target, the target, and popularity at that moment."""

    users: list[str]
    histories: list[list[Rating]]
    targets: list[str]
    times: NDArray[Any]
    popularity_counts: NDArray[Any]  # (users, items): ratings of each item before the query moment
    rows: list[NDArray[Any]] = field(default_factory=list)  # per user: catalogue rows of the history
    stamps: list[NDArray[Any]] = field(default_factory=list)  # per user: their times
    ratings: list[NDArray[Any]] = field(default_factory=list)  # per user: their star values
    stream: Sequence[Rating] = ()  # every rating in time order: what the trending prior is computed from
    _trending: dict[float, NDArray[Any]] = field(default_factory=dict, repr=False)

    def trending(self, index: Mapping[str, int], half_life: float) -> NDArray[Any]:
        """(users, items): the trending prior (pulse.training.space_quality.trending_prior) of the ratings before each
        query moment, as a training at that moment would publish it."""
        if half_life not in self._trending:
            self._trending[half_life] = trending_at(
                np.array([index[rating.item_id] for rating in self.stream], dtype=np.int64),
                np.array([rating.ts for rating in self.stream], dtype=np.float64), len(index), self.times,
                half_life=half_life)
        return self._trending[half_life]

    def index_histories(self, index: Mapping[str, int]) -> None:
        self.rows = [np.array([index[r.item_id] for r in history], dtype=np.int64) for history in self.histories]
        self.stamps = [np.array([r.ts for r in history], dtype=np.float64) for history in self.histories]
        self.ratings = [np.array([r.rating for r in history], dtype=np.float64) for history in self.histories]


@dataclass
class Split:
    movies: list[Movie]
    index: dict[str, int]
    train_ratings: list[Rating]
    stages: dict[str, Stage]

    def interactions(self) -> Interactions:
        """The training ratings as arrays for pulse.training.collaborative (users numbered in first-seen order)."""
        numbers: dict[str, int] = {}
        users = np.array([numbers.setdefault(r.user_id, len(numbers)) for r in self.train_ratings], dtype=np.int64)
        items = np.array([self.index[r.item_id] for r in self.train_ratings], dtype=np.int64)
        times = np.array([r.ts for r in self.train_ratings], dtype=np.float64)
        return Interactions(users, items, times)


def load_split(movies: Sequence[Movie] | None = None, ratings: Sequence[Rating] | None = None) -> Split:
    movies = list(movies if movies is not None else load_movies())
    ratings = list(ratings if ratings is not None else load_ratings())
    index = {movie.item_id: row for row, movie in enumerate(movies)}
    before_test, test = leave_last_out(ratings)
    train_ratings, valid = leave_last_out(before_test)
    by_user: dict[str, list[Rating]] = {}
    for rating in train_ratings:
        by_user.setdefault(rating.user_id, []).append(rating)
    users = sorted(test, key=lambda user: (test[user].ts, user))
    targets = {"valid": valid, "test": test}
    histories = {"valid": [by_user.get(user, []) for user in users],
                 "test": [by_user.get(user, []) + ([valid[user]] if user in valid else []) for user in users]}
    stages = {}
    for name in STAGES:
        kept = [position for position, user in enumerate(users) if user in targets[name]]
        chosen = [targets[name][users[position]] for position in kept]
        stages[name] = Stage(users=[users[position] for position in kept],
                             histories=[histories[name][position] for position in kept],
                             targets=[rating.item_id for rating in chosen],
                             times=np.array([rating.ts for rating in chosen]),
                             popularity_counts=_popularity_at(ratings, chosen, index), stream=ratings)
        stages[name].index_histories(index)
    return Split(movies, index, train_ratings, stages)


def _popularity_at(ratings: Sequence[Rating], queries: Sequence[Rating], index: Mapping[str, int]) -> NDArray[Any]:
    """Counts of the ratings that come before each query rating in the stream's time order (as `pulse eval`)."""
    wanted = {id(rating): position for position, rating in enumerate(queries)}
    counts = np.zeros(len(index), dtype=np.int64)
    snapshots = np.zeros((len(queries), len(index)), dtype=np.int64)
    for rating in ratings:
        position = wanted.get(id(rating))
        if position is not None:
            snapshots[position] = counts
        counts[index[rating.item_id]] += 1
    return snapshots


def rating_weights(scheme: str) -> Callable[[NDArray[Any]], NDArray[Any]]:
    """Star values -> event weights, as the ingest's TypeWeights give them for `rate` events with
    PULSE_RATING_WEIGHTING=scheme: 'stars' (5 -> 2, 4 -> 1.2, 3 -> 0.4, 2 -> -0.4, 1 -> -1.2) or 'flat' (each 2)."""
    weights = TypeWeights(DEFAULT_TYPE_WEIGHTS, rating_weighting=scheme)
    if scheme not in RATING_WEIGHTINGS:
        raise ValueError(f"unknown rating weighting {scheme!r}; expected one of {RATING_WEIGHTINGS}")

    def weigh(stars: NDArray[Any]) -> NDArray[Any]:
        values, positions = np.unique(stars, return_inverse=True)
        each = [weights.weight(BehaviourEvent(event_id="e", user_id="u", type="rate", ts=0.0, item_id="i",
                                              value=float(v))) for v in values]
        return np.asarray(each, dtype=np.float64)[positions]

    return weigh


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: the grid is keyed by its entries
class UserModel:
    """The decayed-sum interest: half-lives per scale, blend weights, how ratings weigh."""

    half_lives: Mapping[str, float]
    blend_weights: Mapping[str, float]
    weights_scheme: str = "flat"
    popularity_weight: float = 0.0  # + weight x the trending prior (with trending_half_life) on each score
    trending_half_life: float = 7 * DAY

    @property
    def label(self) -> str:
        scales = "+".join(f"{_duration(self.half_lives[name])}" + (f"x{self.blend_weights[name]:g}"
                                                                     if len(self.half_lives) > 1 else "")
                          for name in self.half_lives)
        trend = f" +trend {_duration(self.trending_half_life)}x{self.popularity_weight:g}" \
            if self.popularity_weight else ""
        return f"hl={scales} w={self.weights_scheme}{trend}"


def single(half_life: float, scheme: str = "flat") -> UserModel:
    return UserModel({"s": half_life}, {"s": 1.0}, scheme)


# Chosen on validation: the last minute of activity, with a fifth of a one-day scale for users who paused.
DEFAULT_USER_MODEL = UserModel({"short": 60.0, "long": DAY}, {"short": 1.0, "long": 0.2}, "flat")


def user_queries(stage: Stage, item_vectors: NDArray[Any], model: UserModel) -> NDArray[Any]:
    """(users, dim): each user's interest as of the query time, through pulse.interest.model (fold, decay, blend)."""
    weigh = rating_weights(model.weights_scheme)
    queries = np.zeros((len(stage.users), item_vectors.shape[1]))
    for position, (rows, times) in enumerate(zip(stage.rows, stage.stamps, strict=True)):
        if not len(rows):
            continue
        values, embeddings = weigh(stage.ratings[position]), item_vectors[rows]
        scales = {}
        for name, half_life in model.half_lives.items():
            state = fold_events(ScaleState.empty(item_vectors.shape[1]), times, values, embeddings, half_life)
            scales[name] = decay_to(state, float(stage.times[position]), half_life)
        queries[position] = blend(scales, model.blend_weights)
    return queries


def rank(stage: Stage, split: Split, item_vectors: NDArray[Any] | None, queries: NDArray[Any] | None,
         min_strength: float = MIN_STRENGTH, prior: NDArray[Any] | None = None, popularity_weight: float = 0.0
         ) -> tuple[list[list[str]], int]:
    """Top 10 per user, seen items excluded, full ranking; score = cosine + popularity_weight x prior (users x
    items), as pulse.serving.recommend. As in the API, a user whose interest is weaker than min_strength gets the
    popular items of that moment. -> (lists, how many users fell back)."""
    ids = [movie.item_id for movie in split.movies]
    lists, fallbacks = [], 0
    scores_all, strengths = None, np.zeros(len(stage.users))
    if queries is not None and item_vectors is not None:
        strengths = np.linalg.norm(queries, axis=1)
        unit = queries / np.maximum(strengths, 1e-300)[:, None]
        scores_all = unit @ np.asarray(item_vectors, dtype=np.float64).T
        if popularity_weight and prior is not None:
            scores_all += popularity_weight * prior
    for position, seen in enumerate(stage.rows):
        if scores_all is not None and strengths[position] >= max(min_strength, 1e-300):
            scores = scores_all[position].copy()
        else:
            scores = stage.popularity_counts[position].astype(np.float64)
            fallbacks += scores_all is not None
        scores[seen] = -np.inf
        # A stable full sort, not pulse.serving.recommend.top_k: its argpartition drops arbitrary rows among ties at
        # the k-th place, and popularity counts tie often (PopularityBaseline keeps catalogue order).
        lists.append([ids[row] for row in np.argsort(-scores, kind="stable")[:K]])
    return lists, fallbacks


def evaluate_offline(name: str, split: Split, stage_name: str, item_vectors: NDArray[Any] | None,
                     model: UserModel | None = None, *, min_strength: float = MIN_STRENGTH) -> MethodResult:
    """Hit/NDCG/MRR@10, coverage, novelty of one item space under one user model (item_vectors None:
    the popularity baseline) on the 'valid' or 'test' events."""
    stage = split.stages[stage_name]
    model = model or DEFAULT_USER_MODEL
    queries = None
    if item_vectors is not None:
        queries = user_queries(stage, item_vectors, model)
    lists, _ = rank(stage, split, item_vectors, queries, min_strength, *_prior(stage, split, model))
    shares = [PopularityShares(split.index, counts) for counts in stage.popularity_counts]
    return summarize(name, lists, stage.targets, len(split.movies), shares)


def _prior(stage: Stage, split: Split, model: UserModel) -> tuple[NDArray[Any] | None, float]:
    if not model.popularity_weight:
        return None, 0.0
    return stage.trending(split.index, model.trending_half_life), model.popularity_weight


def top10_overlap(split: Split, stage_name: str, old_vectors: NDArray[Any], new_vectors: NDArray[Any],
                  model: UserModel) -> float:
    """Mean |top 10 from the old space ∩ top 10 when the interest built in the old space scores the new one|."""
    stage = split.stages[stage_name]
    queries = user_queries(stage, old_vectors, model)
    before, _ = rank(stage, split, old_vectors, queries, 0.0)
    after, _ = rank(stage, split, new_vectors, queries, 0.0)
    return float(np.mean([len(set(a) & set(b)) for a, b in zip(before, after, strict=True)]))


def _every_user(lists: Sequence[list[str] | None]) -> list[list[str]]:
    """The per-user lists once every group has filled its users' positions."""
    complete = [items for items in lists if items is not None]
    if len(complete) != len(lists):
        raise RuntimeError(f"{len(lists) - len(complete)} users were left without a ranking")
    return complete


def text_matrix(split: Split, path: Path) -> NDArray[Any]:
    """The movies' MiniLM vectors of 'Title (Year) Genre…', cached at `path` (encoding takes ~5 s)."""
    if path.exists():
        cached: NDArray[Any] = np.load(path)
        if cached.shape[0] == len(split.movies):
            return cached
    from pulse_encoder import load_encoder

    texts = [" ".join([movie.display_title, *movie.genres]) for movie in split.movies]
    matrix = np.asarray(load_encoder().encode(texts), dtype=np.float32)
    np.save(path, matrix)
    return matrix


def train_measured(split: Split, text: NDArray[Any], config: SpaceConfig, seed: int = 0,
                   previous: TrainedSpace | None = None) -> tuple[TrainedSpace, int]:
    """-> (space, peak bytes allocated while training, as tracemalloc sees NumPy's buffers)."""
    events = split.interactions()
    tracemalloc.start()
    try:
        space = train(events, len(split.movies), text, config, seed, previous=previous)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return space, peak


def _substage(stage: Stage, positions: Sequence[int]) -> Stage:
    picked = Stage(users=[stage.users[p] for p in positions], histories=[stage.histories[p] for p in positions],
                   targets=[stage.targets[p] for p in positions], times=stage.times[list(positions)],
                   popularity_counts=stage.popularity_counts[list(positions)], stream=stage.stream)
    picked.rows, picked.stamps, picked.ratings = ([column[p] for p in positions]
                                                  for column in (stage.rows, stage.stamps, stage.ratings))
    return picked


def honest_protocol(split: Split, ratings: Sequence[Rating], text: NDArray[Any], config: SpaceConfig,
                    settings: Mapping[str, tuple[tuple[float, float], UserModel]], *, period: float = 7 * DAY,
                    seed: int = 0) -> tuple[list[MethodResult], int]:
    """As production would run: the item space is retrained every `period` on the events before that moment
    only (no future co-occurrence), and each test query uses the latest space trained before it. Queries before
    the first training use the text block alone. -> (results per family + popularity, trainings run)."""
    stage = split.stages["test"]
    ordered = sorted(ratings, key=lambda r: r.ts)
    stamps = np.array([r.ts for r in ordered])
    start = stamps[0]
    boundary_of = np.floor((stage.times - start) / period).astype(int)  # index of the last training before
    lists: dict[str, list[list[str] | None]] = {family: [None] * len(stage.users) for family in settings}
    trainings = 0
    for boundary in sorted(set(boundary_of.tolist())):
        positions = [p for p in range(len(stage.users)) if boundary_of[p] == boundary]
        group = _substage(stage, positions)
        cutoff = start + boundary * period
        before = ordered[: int(np.searchsorted(stamps, cutoff, side="left"))]
        collab = None
        if boundary > 0 and before:
            numbers: dict[str, int] = {}
            events = Interactions(np.array([numbers.setdefault(r.user_id, len(numbers)) for r in before]),
                                  np.array([split.index[r.item_id] for r in before]),
                                  np.array([r.ts for r in before]))
            collab = train(events, len(split.movies), text, config, seed).collab
            trainings += 1
        for family, (weights, model) in settings.items():
            if collab is None:  # nothing to learn from yet: the text block alone
                vectors = hybrid_vectors(text, np.zeros((len(text), 1)), 1.0, 0.0)
            else:
                vectors = hybrid_vectors(text, collab, *weights)
            prior = None
            if model.popularity_weight and before:
                prior = trending_prior(np.array([split.index[r.item_id] for r in before]),
                                       np.array([r.ts for r in before]), len(split.movies), at=cutoff,
                                       half_life=model.trending_half_life)[None, :]
            group_lists, _ = rank(group, split, vectors, user_queries(group, vectors, model), prior=prior,
                                  popularity_weight=model.popularity_weight)
            for position, items in zip(positions, group_lists, strict=True):
                lists[family][position] = items
    shares = [PopularityShares(split.index, counts) for counts in stage.popularity_counts]
    popularity_lists, _ = rank(stage, split, None, None)
    results = [summarize("popularity", popularity_lists, stage.targets, len(split.movies), shares)]
    results += [summarize(f"{family} (retrained every {_duration(period)})", _every_user(lists[family]), stage.targets,
                          len(split.movies), shares) for family in settings]
    return results, trainings


USER_MODELS = tuple(single(half_life, scheme) for scheme in ("flat", "stars")
                    for half_life in (60.0, 120.0, 600.0, HOUR, DAY, 30 * DAY)) + tuple(
    UserModel({"short": short, "long": long}, {"short": 1.0, "long": weight}, scheme)
    for scheme in ("flat", "stars") for short, long, weight in ((60.0, DAY, 0.2), (120.0, 30 * DAY, 0.2)))
BLOCKS = {"text-only": ((1.0, 0.0),), "collab-only": ((0.0, 1.0),), "hybrid": ((0.1, 0.9), (0.25, 0.75), (0.4, 0.6))}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, help="text vectors cache (default: .pulse/build/, per encoder)")
    parser.add_argument("--dim", type=int, default=SpaceConfig.dim)
    parser.add_argument("--seeds", type=int, default=1, help="also report test Hit/NDCG over this many seeds")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    split = load_split()
    if args.text is None:
        from pulse.wiring import encoder_fingerprint

        args.text = Path(".pulse/build") / f"ml_text-{(encoder_fingerprint() or 'unknown')[:16]}.npy"
        args.text.parent.mkdir(parents=True, exist_ok=True)
    text = text_matrix(split, args.text)
    config = replace(SpaceConfig(), dim=args.dim)
    space, peak = train_measured(split, text, config, seed=0)
    print(f"item space from {len(split.train_ratings)} ratings in {space.seconds['total']:.2f} s ("
          + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in space.seconds.items() if step != "total")
          + f"); peak {peak / 2**20:.0f} MiB traced (estimate {space.peak_bytes_estimate / 2**20:.0f} MiB); "
          f"{int((~space.warm_mask).sum())} cold items filled from text")

    spaces = {(family, weights): hybrid_vectors(text, space.collab, *weights)
              for family, choices in BLOCKS.items() for weights in choices}
    grid = {(key, model): evaluate_offline("", split, "valid", vectors, model)
            for (key, vectors), model in itertools.product(spaces.items(), USER_MODELS)}
    print("\nvalidation Hit@10 / NDCG@10 of every setting (rows: text weight, collab weight):")
    for part in (USER_MODELS[:8], USER_MODELS[8:]):
        print(" " * 10 + "  ".join(f"{model.label[3:]:>22}" for model in part))
        for key in spaces:
            print(f"{key[1][0]:g}/{key[1][1]:g}".ljust(10) + "  ".join(
                f"{grid[(key, model)].hit:.3f} / {grid[(key, model)].ndcg:.3f}".rjust(22) for model in part))

    chosen = {family: max(((key, model) for key, model in grid if key[0] == family),
                          key=lambda pair: grid[pair].ndcg) for family in BLOCKS}
    # Then, as each training does, the trending prior's half-life and weight for the settings chosen.
    print("\nvalidation NDCG@10 with the trending prior (rows: its half-life; columns: its weight):")
    for family, (key, model) in list(chosen.items()):
        trial = {(half_life, weight): evaluate_offline("", split, "valid", spaces[key], replace(
            model, popularity_weight=weight, trending_half_life=half_life)).ndcg
            for half_life in TRENDING_HALF_LIFE_CHOICES for weight in POPULARITY_WEIGHT_CHOICES}
        print(f"{family:<12}" + "".join(f"{weight:>8g}" for weight in POPULARITY_WEIGHT_CHOICES))
        for half_life in TRENDING_HALF_LIFE_CHOICES:
            print(f"  {_duration(half_life):<10}" + "".join(f"{trial[(half_life, weight)]:>8.4f}"
                                                         for weight in POPULARITY_WEIGHT_CHOICES))
        half_life, weight = max(trial, key=lambda pair: (trial[pair], -pair[1]))
        chosen[family] = (key, replace(model, popularity_weight=weight, trending_half_life=half_life))
    for stage_name in STAGES:
        results = [evaluate_offline("popularity", split, stage_name, None)]
        for family, (key, model) in chosen.items():
            label = f"{family} ({key[1][0]:g}/{key[1][1]:g}, {model.label})"
            results.append(evaluate_offline(label, split, stage_name, spaces[key], model))
        print(f"\n{stage_name} (settings chosen on validation NDCG@10):")
        print(results_table(results))

    started_honest = time.perf_counter()
    honest, trainings = honest_protocol(split, load_ratings(), text, config,
                                        {family: (key[1], model) for family, (key, model) in chosen.items()})
    print(f"\nhonest protocol on test (the item space retrained weekly on the events before each moment only; "
          f"{trainings} trainings, {time.perf_counter() - started_honest:.0f} s):")
    print(results_table(honest))

    test = split.stages["test"]
    for family, (key, model) in chosen.items():
        _, fallbacks = rank(test, split, spaces[key], user_queries(test, spaces[key], model))
        print(f"{family}: {fallbacks} of {len(test.users)} test users' interest had faded below {MIN_STRENGTH:g} "
              "(popular items)")
    (family_key, hybrid_model) = chosen["hybrid"]
    retrained, _ = train_measured(split, text, config, seed=1, previous=space)
    unaligned, _ = train_measured(split, text, config, seed=1)
    for name, other in (("aligned", retrained), ("not aligned", unaligned)):
        new_vectors = hybrid_vectors(text, other.collab, *family_key[1])
        overlap = top10_overlap(split, "test", spaces[family_key], new_vectors, hybrid_model)
        print(f"retrain with seed 1, {name}: users' stored interest keeps {overlap:.2f}/10 of its top 10")
    if args.seeds > 1:
        rows = []
        for seed in range(args.seeds):
            other = space if seed == 0 else train(split.interactions(), len(split.movies), text, config, seed)
            for family, (key, model) in chosen.items():
                result = evaluate_offline(family, split, "test", hybrid_vectors(text, other.collab, *key[1]), model)
                rows.append((family, result.hit, result.ndcg))
        for family in BLOCKS:
            hits = [hit for name, hit, _ in rows if name == family]
            ndcgs = [ndcg for name, _, ndcg in rows if name == family]
            print(f"test over {args.seeds} seeds, {family}: Hit@10 {np.mean(hits):.4f} ± {np.std(hits):.4f}, "
                  f"NDCG@10 {np.mean(ndcgs):.4f} ± {np.std(ndcgs):.4f}")
    print(f"\nwhole run {time.perf_counter() - started:.1f} s")


def _duration(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


if __name__ == "__main__":
    main()
