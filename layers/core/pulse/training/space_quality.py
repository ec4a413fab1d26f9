"""How well an item space and a set of interest settings predict what users did next: the training's gate and
its settings search. Pure NumPy/SciPy, no AWS.

The held-out slice: each user's latest event of the archive window, asked as of its time from their earlier
events (seen items excluded), scored by full ranking of the available items; the most recent ones when there are
many. The user's interest is the one the API computes (pulse.serving.recommend.scale_vectors): each
history event weighed by its type and value, decayed per time scale, blended with the soft cap of
pulse.interest.model.blend. Ranking needs only sum_s c_s(user) * (A_s E) E^T, so each (half-life, weighting, item
space) costs one product and every blend of them is nearly free: the grid stays cheap.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from pulse.interest.model import DEFAULT_TYPE_WEIGHTS, RATING_WEIGHTINGS, TypeWeights

K = 10
DAY = 86400.0


@dataclass(frozen=True)
class Interaction:
    user: str
    row: int  # catalogue row
    ts: float
    type: str
    value: float | None


@dataclass
class HeldOut:
    """Queries: per user the history rows/times/types/values, the target row and the moment asked."""

    users: list[str]
    targets: NDArray[Any]  # (Q,) rows
    times: NDArray[Any]  # (Q,) epoch seconds
    history: list[list[Interaction]]
    n_items: int
    seen: sp.csr_matrix = field(init=False)

    def __post_init__(self) -> None:
        flat = [(q, event) for q, events in enumerate(self.history) for event in events]
        self._query = np.array([q for q, _ in flat], dtype=np.int64)
        self._rows = np.array([event.row for _, event in flat], dtype=np.int64)
        self._ages = np.maximum(0.0, self.times[self._query] - np.array([event.ts for _, event in flat]))
        self._kinds = [(event.type, event.value) for _, event in flat]
        self._weights: dict[str, NDArray[Any]] = {}
        self.seen = sp.csr_matrix((np.ones(len(flat), dtype=bool), (self._query, self._rows)),
                                  shape=(len(self.users), self.n_items))

    def decayed(self, half_life: float, weighting: str) -> sp.csr_matrix:
        """(Q x N) each history event's weight, decayed to its user's question time."""
        if weighting not in self._weights:
            weights = TypeWeights(DEFAULT_TYPE_WEIGHTS, rating_weighting=weighting)
            by_kind = {kind: weights.weight_of(*kind) for kind in set(self._kinds)}
            self._weights[weighting] = np.array([by_kind[kind] for kind in self._kinds], dtype=np.float64)
        values = self._weights[weighting] * np.exp2(-self._ages / half_life)
        return sp.csr_matrix((values, (self._query, self._rows)), shape=(len(self.users), self.n_items))

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, positions: Sequence[int]) -> HeldOut:
        return HeldOut([self.users[p] for p in positions], self.targets[list(positions)],
                       self.times[list(positions)], [self.history[p] for p in positions], self.n_items)

    def halves(self) -> tuple[HeldOut, HeldOut]:
        """Two disjoint halves by hashed user id: one to choose settings on, one to judge with."""
        parity = [hashlib.blake2b(user.encode(), digest_size=2).digest()[0] % 2 for user in self.users]
        return (self.subset([p for p, bit in enumerate(parity) if bit == 0]),
                self.subset([p for p, bit in enumerate(parity) if bit == 1]))


def held_out_slice(events: Sequence[Interaction], n_items: int, *, max_users: int = 2000,
                   after: float | None = None) -> tuple[HeldOut, list[Interaction]]:
    """-> (the held-out queries, every other event: what a candidate may be trained on).

    Each user's latest event is held out, asked as of its time from their earlier events (users with at least
    one); only events later than `after` (what the serving version learned from: it must not be judged on what
    it has seen), and the `max_users` most recent of these, so the gate judges the newest behaviour."""
    if not events:
        return HeldOut([], np.zeros(0, dtype=np.int64), np.zeros(0), [], n_items), []
    ordered = sorted(events, key=lambda e: (e.ts, e.user, e.row))
    history: dict[str, list[Interaction]] = {}
    for event in ordered:
        history.setdefault(event.user, []).append(event)
    latest = sorted(((user, own[-1]) for user, own in history.items()
                     if len(own) >= 2 and (after is None or own[-1].ts > after)),
                    key=lambda pair: (-pair[1].ts, pair[0]))[:max_users]
    latest.sort(key=lambda pair: pair[0])
    held = {id(target) for _, target in latest}
    queries = HeldOut([user for user, _ in latest], np.array([t.row for _, t in latest], dtype=np.int64),
                      np.array([t.ts for _, t in latest], dtype=np.float64),
                      [history[user][:-1] for user, _ in latest], n_items)
    return queries, [event for event in ordered if id(event) not in held]


@dataclass(frozen=True)
class InterestModel:
    """The settings a training learns: half-lives and blend per scale, how ratings weigh."""

    half_lives: Mapping[str, float]
    blend_weights: Mapping[str, float]
    rating_weighting: str = "stars"
    popularity_weight: float = 0.0  # how much the version's trending prior adds to each personal score

    def as_dict(self) -> dict[str, Any]:
        return {"half_lives": dict(self.half_lives), "blend_weights": dict(self.blend_weights),
                "rating_weighting": self.rating_weighting, "popularity_weight": self.popularity_weight}


@dataclass(frozen=True)
class Quality:
    hit: float
    ndcg: float
    users: int
    per_user_ndcg: NDArray[Any] = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"hit_at_10": round(self.hit, 4), "ndcg_at_10": round(self.ndcg, 4), "users": self.users}


class Scorer:
    """Scores one item space on one held-out slice, caching the per-scale products.

    `prior`: the trending prior (pulse.serving.recommend adds popularity_weight x prior to the cosine): one per item (a
    version's), or one row per query (trending_at: each as of its question's moment)."""

    def __init__(self, queries: HeldOut, item_vectors: NDArray[Any], available: NDArray[Any] | None = None,
                 prior: NDArray[Any] | None = None):
        self.queries = queries
        self.items = np.asarray(item_vectors, dtype=np.float64)
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.blocked = queries.seen.toarray()
        if available is not None:
            self.blocked |= ~np.asarray(available, dtype=bool)[None, :]
        self._cache: dict[tuple[float, str], tuple[NDArray[Any], NDArray[Any], NDArray[Any]]] = {}

    def _scale(self, half_life: float, weighting: str) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        """(the unnormalised scale vectors Q x D, their scores Q x N, their lengths)."""
        key = (half_life, weighting)
        if key not in self._cache:
            A = self.queries.decayed(half_life, weighting)
            vectors = A @ self.items
            self._cache[key] = (vectors, vectors @ self.items.T, np.linalg.norm(vectors, axis=1))
        return self._cache[key]

    def scores(self, model: InterestModel, prior: NDArray[Any] | None = None) -> NDArray[Any]:
        """(Q x N) each user's item scores: without a popularity weight up to a positive factor per user, with
        one exactly what the API serves (the cosine with the blended interest plus weight x prior). `prior`:
        another prior than the scorer's (the cached products are the same)."""
        prior = self.prior if prior is None else prior
        with_prior = bool(model.popularity_weight) and prior is not None
        scores = np.zeros((len(self.queries), self.items.shape[0]))
        blended = np.zeros((len(self.queries), self.items.shape[1])) if with_prior else None
        for name, half_life in model.half_lives.items():
            vectors, part, norms = self._scale(half_life, model.rating_weighting)
            # blend(): each scale scaled to unit length, capped so a faded scale stays faint
            coefficient = model.blend_weights.get(name, 0.0) * np.minimum(1.0, norms) / np.maximum(norms, 1e-300)
            scores += coefficient[:, None] * part
            if blended is not None:
                blended += coefficient[:, None] * vectors
        if blended is not None and prior is not None:  # blended is only built with a prior
            scores /= np.maximum(np.linalg.norm(blended, axis=1), 1e-300)[:, None]
            scores += model.popularity_weight * prior
        return scores

    def quality(self, model: InterestModel, prior: NDArray[Any] | None = None) -> Quality:
        if not len(self.queries):
            return Quality(0.0, 0.0, 0, np.zeros(0))
        return rank_quality(self.scores(model, prior), self.queries.targets, self.blocked)


def rank_quality(scores: NDArray[Any], targets: NDArray[Any], blocked: NDArray[Any]) -> Quality:
    """Hit@10 and NDCG@10 of the targets under full ranking; ties count against the target."""
    if not len(targets):
        return Quality(0.0, 0.0, 0, np.zeros(0))
    target_scores = scores[np.arange(len(targets)), targets]
    masked = np.where(blocked, -np.inf, scores)
    masked[np.arange(len(targets)), targets] = -np.inf  # the target itself is not its own competitor
    rank = (masked >= target_scores[:, None]).sum(axis=1)
    hit = rank < K
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    return Quality(float(hit.mean()), float(ndcg.mean()), len(targets), ndcg)


def popularity_quality(queries: HeldOut, counts: NDArray[Any], available: NDArray[Any] | None = None) -> Quality:
    """The popular items (event counts before the slice) for everyone: the floor every space must beat."""
    blocked = queries.seen.toarray()
    if available is not None:
        blocked |= ~np.asarray(available, dtype=bool)[None, :]
    scores = np.broadcast_to(np.asarray(counts, dtype=np.float64), (len(queries), len(counts))).copy()
    return rank_quality(scores, queries.targets, blocked)


HALF_LIFE_CHOICES = {"short": (60.0, 600.0, 1800.0, 3600.0), "long": (DAY, 7 * DAY, 30 * DAY)}
BLEND_CHOICES = ({"short": 1.0, "long": 0.2}, {"short": 1.0, "long": 1.0}, {"short": 0.2, "long": 1.0})
BLOCK_CHOICES = ((0.25, 0.75), (0.5, 0.5), (0.1, 0.9))
TRENDING_HALF_LIFE_CHOICES = (3 * DAY, 7 * DAY, 30 * DAY)
POPULARITY_WEIGHT_CHOICES = (0.0, 0.1, 0.2, 0.3, 0.5)


def trending_prior(rows: NDArray[Any], times: NDArray[Any], n_items: int, *, at: float,
                   half_life: float) -> NDArray[Any]:
    """Per item, what users did lately: log(1 + event count decayed to `at` with `half_life`), relative to the
    top item, so [0, 1]. The log keeps the few blockbusters from flattening the rest; events after `at` count
    undecayed."""
    rows = np.asarray(rows, dtype=np.int64)
    ages = np.maximum(0.0, at - np.asarray(times, dtype=np.float64))
    return relative_log_counts(np.bincount(rows, weights=np.exp2(-ages / half_life), minlength=n_items))


def trending_at(rows: NDArray[Any], times: NDArray[Any], n_items: int, moments: NDArray[Any], *,
                half_life: float) -> NDArray[Any]:
    """(len(moments) x n_items): row q is trending_prior of the events strictly before moments[q], decayed to
    it: what a prior computed at that moment would say, with nothing from after it. One pass over the events in
    time order, a running decayed sum (no overflow however long the span)."""
    order = np.argsort(times, kind="stable")
    rows, times = np.asarray(rows, dtype=np.int64)[order], np.asarray(times, dtype=np.float64)[order]
    moments = np.asarray(moments, dtype=np.float64)
    out = np.zeros((len(moments), n_items))
    running, clock, position = np.zeros(n_items), None, 0
    for q in np.argsort(moments, kind="stable"):
        moment = moments[q]
        if clock is not None:
            running *= np.exp2(-(moment - clock) / half_life)
        end = int(np.searchsorted(times, moment, side="left"))
        if end > position:
            running += np.bincount(rows[position:end], weights=np.exp2(-(moment - times[position:end]) / half_life),
                                   minlength=n_items)
            position = end
        clock = moment
        out[q] = relative_log_counts(running)
    return out


def relative_log_counts(counts: NDArray[Any]) -> NDArray[Any]:
    """log(1 + count) relative to the largest: [0, 1], zeros when nothing counted."""
    logs = np.log1p(np.asarray(counts, dtype=np.float64))
    peak = float(logs.max()) if len(logs) else 0.0
    return logs / peak if peak > 0 else np.zeros(len(logs))


def interest_grid(pinned: InterestModel | None = None, pinned_names: frozenset[str] = frozenset()
                  ) -> list[InterestModel]:
    """Every combination of the choices, with what the deployment pinned held fixed."""
    half_lives = [pinned.half_lives] if pinned is not None and "half_lives" in pinned_names else [
        {"short": short, "long": long} for short, long in itertools.product(*HALF_LIFE_CHOICES.values())]
    weightings = [pinned.rating_weighting] if pinned is not None and "rating_weighting" in pinned_names \
        else list(RATING_WEIGHTINGS)
    grid: list[InterestModel] = []
    for lives, weighting in itertools.product(half_lives, weightings):
        blends = [pinned.blend_weights] if pinned is not None and "blend_weights" in pinned_names else [
            blend for blend in BLEND_CHOICES if set(blend) == set(lives)] or [{name: 1.0 for name in lives}]
        grid.extend(InterestModel(dict(lives), dict(blend), weighting) for blend in blends)
    return grid


def paired_difference(candidate: Quality, serving: Quality) -> tuple[float, float]:
    """(mean NDCG@10 difference candidate - serving over the same users, its standard error)."""
    difference = candidate.per_user_ndcg - serving.per_user_ndcg
    if len(difference) < 2:
        return float(difference.mean()) if len(difference) else 0.0, math.inf
    return float(difference.mean()), float(difference.std(ddof=1) / math.sqrt(len(difference)))
