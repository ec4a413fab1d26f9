"""Scoring the catalogue against a user's interest: pure NumPy, no AWS.

One matrix-vector product over the whole catalogue (float32, or the API's int8 scan with an exact float32 rescoring
of its shortlist), masks for the filters, a block-maximum pass and `argpartition` for the top k.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from pulse.catalog.version import CatalogVersion
from pulse.interest.model import DEFAULT_TYPE_WEIGHTS, MIN_STRENGTH, TypeWeights, UserInterest, blend, decay_to
from pulse.serving.int8_scan import shortlist_size

MAX_K = 100
TOP_K_BLOCK = 256


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str


Strategy = Literal["personal", "popular"]  # from the user's interest, or the catalogue's popularity (cold start)


@dataclass(frozen=True, slots=True)
class Recommendations:
    strategy: Strategy
    items: list[ScoredItem] = field(default_factory=list)


DEFAULT_WEIGHTS = TypeWeights(DEFAULT_TYPE_WEIGHTS)


def scale_vectors(user: UserInterest, catalog: CatalogVersion, at: float, half_lives: Mapping[str, float],
                  type_weights: TypeWeights = DEFAULT_WEIGHTS) -> dict[str, NDArray[Any]]:
    """The user's interest per time scale as of `at`, in this catalogue's item space: the history's item events
    weighed and decayed now (events after `at` count undecayed: nothing is un-applied), plus the text-space
    residual mapped into the space. Items the catalogue no longer holds count nothing."""
    rows, times, weights = [], [], []
    for entry in user.history:
        row = catalog.index.get(entry.item_id)
        if row is not None:
            rows.append(row)
            times.append(entry.ts)
            weights.append(entry.weight(type_weights))
    items = catalog.embeddings[rows].astype(np.float64) if rows else None
    ages = np.maximum(0.0, at - np.array(times, dtype=np.float64))
    vectors = {}
    for name, half_life in half_lives.items():
        vector = np.zeros(catalog.dim)
        state = user.scales.get(name)
        if state is not None and state.vector.shape == (catalog.text_dim,):
            vector += catalog.embed_residual(decay_to(state, at, half_life))
        if items is not None:
            vector += (np.array(weights) * np.exp2(-ages / half_life)) @ items
        vectors[name] = vector
    return vectors


def interest_vector(user: UserInterest, catalog: CatalogVersion, at: float, half_lives: Mapping[str, float],
                    blend_weights: Mapping[str, float], type_weights: TypeWeights = DEFAULT_WEIGHTS) -> NDArray[Any]:
    """The user's interest as of `at`: each scale decayed, then blended."""
    return blend(scale_vectors(user, catalog, at, half_lives, type_weights), blend_weights)


def top_k(scores: NDArray[Any], k: int) -> NDArray[np.int64]:
    """Indices of the k highest finite scores, best first (ties: lower index first). O(n + k log k).

    On large arrays, a cheap pass first: the k-th largest of the per-block maxima is a lower bound of the
    k-th largest score (k blocks hold an element at least that high), so only the scores reaching it, usually
    a few dozen, go through the exact selection. 16x faster than argpartition over 1M scores.
    """
    if k > 0 and len(scores) >= TOP_K_BLOCK * max(k, 16) * 4:
        usable = len(scores) - len(scores) % TOP_K_BLOCK
        block_max = scores[:usable].reshape(-1, TOP_K_BLOCK).max(axis=1)
        if usable < len(scores):
            block_max = np.append(block_max, scores[usable:].max())
        threshold = np.partition(block_max, len(block_max) - k)[len(block_max) - k]
        if np.isfinite(threshold):
            rows = np.flatnonzero(scores >= threshold)  # ascending: ties keep their index order
            best: NDArray[np.int64] = rows[_exact_top_k(scores[rows], k)]
            return best
    return _exact_top_k(scores, k)


def _exact_top_k(scores: NDArray[Any], k: int) -> NDArray[np.int64]:
    finite = int(np.isfinite(scores).sum())
    k = min(k, finite)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    # argpartition finds the k-th best value; the ties at that value are then taken in index order.
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    above = np.flatnonzero(scores > kth)
    ties = np.flatnonzero(scores == kth)[: k - len(above)]
    candidates = np.concatenate([above, ties])
    ranked: NDArray[np.int64] = candidates[np.lexsort((candidates, -scores[candidates]))]
    return ranked


def allowed_mask(catalog: CatalogVersion, *, exclude: set[str] | frozenset[str] = frozenset(),
                 category: str | None = None) -> NDArray[np.bool_]:
    """Rows that may be recommended: available, in the category (if any), not excluded."""
    allowed = catalog.available.copy()
    if category is not None:
        in_category = np.zeros(len(catalog), dtype=bool)
        rows = catalog.category_rows.get(category.casefold())
        if rows is not None:
            in_category[rows] = True
        allowed &= in_category
    excluded_rows = [catalog.index[item_id] for item_id in exclude if item_id in catalog.index]
    allowed[excluded_rows] = False
    return allowed


def recommend(catalog: CatalogVersion, user: UserInterest | None, *, k: int, at: float,
              half_lives: Mapping[str, float], blend_weights: Mapping[str, float], exclude_seen: bool = True,
              category: str | None = None, min_strength: float = MIN_STRENGTH,
              type_weights: TypeWeights = DEFAULT_WEIGHTS, query: NDArray[Any] | None = None,
              popularity_weight: float = 0.0) -> Recommendations:
    """Score = cosine with the user's interest + popularity_weight x the version's trending prior.
    `query`: the user's interest vector when the caller computed it already (else from `user`)."""
    seen = set(user.recent_items) if (user is not None and exclude_seen) else set()
    allowed = allowed_mask(catalog, exclude=seen, category=category)
    if query is None:
        query = interest_vector(user, catalog, at, half_lives, blend_weights, type_weights) \
            if user is not None else np.zeros(0)
    strength = float(np.linalg.norm(query)) if query.size else 0.0
    # A zero interest has no direction to score with, whatever min_strength (0 is allowed): as offline_eval.rank.
    if strength < max(min_strength, 1e-300) or query.shape != (catalog.dim,):
        return popular(catalog, allowed, k, category)
    prior = np.float32(popularity_weight) * catalog.trend32 \
        if popularity_weight and catalog.trend32 is not None else None
    best, scores = best_rows(catalog, (query / strength).astype(np.float32), allowed, k, prior)
    reasons = _personal_reasons(catalog, user, best)
    return Recommendations("personal", [ScoredItem(catalog.item_ids[row], round(float(score), 6), reason)
                                        for row, score, reason in zip(best, scores, reasons, strict=True)])


def best_rows(catalog: CatalogVersion, query: NDArray[np.float32], allowed: NDArray[np.bool_], k: int,
              prior: NDArray[np.float32] | None = None) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k allowed rows with the highest float32 `rows . query (+ prior)`, best first (ties: lower row first),
    and those scores. With the version's int8 scan: the approximate scores pick a shortlist, which is rescored
    exactly, so the scores returned are always the float32 ones."""
    if k <= 0 or not np.isfinite(query).all():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)  # nothing asked, or no direction
    scan = catalog.scan
    if scan is None or len(catalog) <= shortlist_size(k):
        scores = catalog.embeddings @ query
        if prior is not None:
            scores += prior
        scores = np.where(allowed, scores, -np.inf)
        rows = top_k(scores, k)
        return rows, scores[rows]
    approximate = scan.scores(query)
    if prior is not None:
        approximate += prior
    approximate[~allowed] = -np.inf
    shortlist = top_k(approximate, shortlist_size(k))
    exact: NDArray[np.float32] = catalog.embeddings[shortlist] @ query
    if prior is not None:
        exact += prior[shortlist]
    order = np.lexsort((shortlist, -exact))[:k]
    return shortlist[order], exact[order]


def popular(catalog: CatalogVersion, allowed: NDArray[np.bool_], k: int, category: str | None = None
            ) -> Recommendations:
    """Most popular allowed items; score = popularity relative to the most popular item (0..1): the catalogue's
    own `popularity` when the upload gave one, else what users did lately (the version's trending prior)."""
    measure = catalog.popularity if catalog.popularity.any() else catalog.trending
    peak = float(measure.max()) if len(catalog) else 0.0
    relative = measure / peak if peak > 0 else np.zeros(len(catalog))
    scores = np.where(allowed, relative, -np.inf)
    reason = f"popular in {category}" if category else "popular"
    return Recommendations("popular", [ScoredItem(catalog.item_ids[row], round(float(scores[row]), 6), reason)
                                       for row in top_k(scores, k)])


def similar_items(catalog: CatalogVersion, item_id: str, k: int) -> list[ScoredItem]:
    """Nearest items to one item (itself excluded, unavailable items excluded)."""
    row = catalog.index[item_id]
    allowed = catalog.available.copy()
    allowed[row] = False
    rows, scores = best_rows(catalog, np.array(catalog.embeddings[row]), allowed, k)
    title = catalog.titles[row] or item_id
    return [ScoredItem(catalog.item_ids[other], round(float(score), 6), f"similar to {title}")
            for other, score in zip(rows, scores, strict=True)]


def _personal_reasons(catalog: CatalogVersion, user: UserInterest | None, rows: NDArray[Any]) -> list[str]:
    """'because you liked <recent item most similar to it>', or the interest itself when nothing is known."""
    recent = [catalog.index[item_id] for item_id in (user.recent_items if user else {}) if item_id in catalog.index]
    if not recent or len(rows) == 0:
        return ["matches your recent interest"] * len(rows)
    similarity = catalog.embeddings[rows] @ catalog.embeddings[recent].T
    anchors = [recent[column] for column in similarity.argmax(axis=1)]
    return [f"close to {catalog.titles[anchor] or catalog.item_ids[anchor]}, which you engaged with"
            for anchor in anchors]
