"""A learned item space: a collaborative block from the event stream next to the text block.

Item vectors come from time-aware co-occurrence (what users consume close together in time), normalized and
factorized; items nobody has touched yet get their collaborative vector from their text through a ridge map;
retrains are rotated onto the previous space so item neighbourhoods stay stable from one training to the next
(user state does not depend on the space: it is derived at query time). Pure NumPy/SciPy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from pulse.catalog.version import hybrid_vectors
from pulse.settings import TrainSettings

# Pairs are flushed into the sparse matrix in chunks so memory stays bounded whatever the neighbour count.
_PAIR_CHUNK = 2_000_000


@dataclass(frozen=True)
class Interactions:
    """Events as parallel arrays: user (any integer id), item row in the catalogue, epoch seconds."""

    user_ids: NDArray[Any]
    item_rows: NDArray[Any]
    times: NDArray[Any]

    def __post_init__(self) -> None:
        sizes = {len(self.user_ids), len(self.item_rows), len(self.times)}
        if len(sizes) != 1:
            raise ValueError(f"user_ids, item_rows and times differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.item_rows)


def cooccurrence(user_ids: NDArray[Any], item_rows: NDArray[Any], times: NDArray[Any], n_items: int, *,
                 window_seconds: float, half_life_seconds: float, max_neighbours: int = 40) -> sp.csr_matrix:
    """Symmetric item x item matrix, zero diagonal: sum over users of 2^(-|dt|/half_life) per pair of events.

    Only pairs at most `max_neighbours` apart in the user's time order and `window_seconds` apart in time
    count: closeness in time is the signal, and the bound keeps the cost O(events x neighbours) for users with
    thousands of events. Sorting by (user, time, item) lets offset d pair every event with its d-th successor
    at once; events in the same second are taken in item-row order.
    """
    users = np.asarray(user_ids)
    items = np.asarray(item_rows, dtype=np.int64)
    stamps = np.asarray(times, dtype=np.float64)
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item rows must be in [0, {n_items})")
    order = np.lexsort((items, stamps, users))
    users, items, stamps = users[order], items[order], stamps[order]
    total = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    buffered: list[tuple[NDArray[Any], NDArray[Any], NDArray[Any]]] = []
    pending = 0
    for offset in range(1, max(0, min(max_neighbours, len(items) - 1)) + 1):
        elapsed = stamps[offset:] - stamps[:-offset]
        # Both conditions only get stricter as the offset grows, so no candidate left means we are done.
        candidate = (users[offset:] == users[:-offset]) & (elapsed <= window_seconds)
        if not candidate.any():
            break
        keep = candidate & (items[offset:] != items[:-offset])
        weight = np.exp2(-elapsed[keep] / half_life_seconds)  # an infinite half-life gives 1: plain counts
        buffered.append((items[:-offset][keep], items[offset:][keep], weight))
        pending += len(weight)
        if pending >= _PAIR_CHUNK:
            total = total + _pairs_to_csr(buffered, n_items)
            buffered, pending = [], 0
    if buffered:
        total = total + _pairs_to_csr(buffered, n_items)
    symmetric = (total + total.T).tocsr()
    symmetric.setdiag(0.0)
    symmetric.eliminate_zeros()
    symmetric.sort_indices()
    return symmetric


def _pairs_to_csr(chunks: list[tuple[NDArray[Any], NDArray[Any], NDArray[Any]]], n_items: int) -> sp.csr_matrix:
    rows = np.concatenate([chunk[0] for chunk in chunks])
    cols = np.concatenate([chunk[1] for chunk in chunks])
    values = np.concatenate([chunk[2] for chunk in chunks])
    return sp.coo_matrix((values, (rows, cols)), shape=(n_items, n_items)).tocsr()


def normalize(C: sp.spmatrix, method: str = "sym") -> sp.csr_matrix:
    """'sym': D^-1/2 C D^-1/2 (similarity relative to both items' activity, eigenvalues in [-1, 1]);
    'ppmi': max(0, log(C_ij * sum(C) / (d_i * d_j))) (how much more often than chance)."""
    C = sp.csr_matrix(C, dtype=np.float64)
    degree = np.asarray(C.sum(axis=1)).ravel()
    inverse_root = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    if method == "sym":
        scaled = sp.diags(inverse_root) @ C @ sp.diags(inverse_root)
        return sp.csr_matrix(scaled)
    if method == "ppmi":
        coo = C.tocoo()
        pmi = np.log(coo.data * degree.sum() / (degree[coo.row] * degree[coo.col]))
        keep = pmi > 0
        return sp.coo_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=C.shape).tocsr()
    raise ValueError(f"unknown normalization {method!r}; expected 'sym' or 'ppmi'")


def top_eigenpairs(M: sp.spmatrix | NDArray[Any], dim: int, *, seed: int, oversample: int = 64,
                   power_iterations: int = 8) -> tuple[NDArray[Any], NDArray[Any]]:
    """Largest-algebraic eigenpairs of a symmetric matrix by randomized subspace iteration (Halko et al.).

    Seeded and deterministic; costs a few sparse mat-mats, so it scales to catalogues where a dense eigh would
    not (ARPACK's eigsh took 20 s for 256 pairs of a 1,682-item matrix; this takes under a second). The range
    finder follows |lambda|, so the oversampling also has to cover strongly negative eigenvalues, which are then
    dropped. Returns (eigenvalues descending, vectors as columns).
    """
    n = M.shape[0]
    width = min(n, dim + oversample)
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(M @ rng.standard_normal((n, width)))
    for _ in range(power_iterations):
        basis, _ = np.linalg.qr(M @ basis)
    small = basis.T @ (M @ basis)
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    order = np.argsort(values)[::-1][:dim]
    return values[order], basis @ vectors[:, order]


def item_factors(C: sp.spmatrix, dim: int, *, seed: int, method: str = "sym", exponent: float = 0.0,
                 oversample: int = 64, power_iterations: int = 8) -> NDArray[Any]:
    """(n_items, dim) vectors V * lambda^exponent of the normalized co-occurrence; untouched rows are 0.

    Only positive eigenvalues are kept (negative ones encode 'never together', not similarity). Exponent 0
    (plain eigenvectors) ranked clearly better on MovieLens than the usual V*sqrt(lambda): weighting by the
    eigenvalues lets the few broad directions drown the many fine ones that tell close neighbours apart.
    """
    M = normalize(C, method)
    values, vectors = top_eigenpairs(M, dim, seed=seed, oversample=oversample, power_iterations=power_iterations)
    positive = values > 0
    factors = np.zeros((M.shape[0], dim))
    factors[:, : int(positive.sum())] = vectors[:, positive] * np.power(values[positive], exponent)
    factors[np.asarray(abs(C).sum(axis=1)).ravel() == 0] = 0.0
    return factors


def ridge_map(text: NDArray[Any], collab: NDArray[Any], warm_mask: NDArray[Any], alpha: float = 1.0) -> NDArray[Any]:
    """W minimizing |text W - collab|^2 + alpha |W|^2 on warm rows: a cold item's best guess from its text."""
    X, Y = np.asarray(text, dtype=np.float64)[warm_mask], np.asarray(collab, dtype=np.float64)[warm_mask]
    gram = X.T @ X + alpha * np.eye(X.shape[1])
    solution: NDArray[np.float64] = np.linalg.solve(gram, X.T @ Y)
    return solution


def apply_map(text: NDArray[Any], W: NDArray[Any]) -> NDArray[Any]:
    mapped: NDArray[np.float64] = np.asarray(text, dtype=np.float64) @ W
    return mapped


def procrustes(new: NDArray[Any], old: NDArray[Any], shared_mask: NDArray[Any]) -> NDArray[Any]:
    """Orthogonal R minimizing |new R - old| on shared rows; rotating (not refitting) keeps every item's
    geometry, so a vector built in the old space scores the retrained items as before up to the training noise
    (the offline protocol measures that overlap)."""
    A, B = np.asarray(new, dtype=np.float64)[shared_mask], np.asarray(old, dtype=np.float64)[shared_mask]
    left, _, right = np.linalg.svd(A.T @ B, full_matrices=False)
    rotation: NDArray[np.float64] = left @ right
    return rotation


@dataclass(frozen=True)
class SpaceConfig:
    """Defaults chosen on MovieLens-100K validation events (pulse_dev.offline_eval): pairs within a day, weighted
    with a ten-minute half-life, up to 40 neighbours apart; plain eigenvectors of D^-1/2 C D^-1/2. The dimensions
    and the blocks' weights are the deployment's settings (pulse.settings.TrainSettings)."""

    dim: int = TrainSettings.default("collab_dim")
    window_seconds: float = 86400.0
    half_life_seconds: float = 600.0
    max_neighbours: int = 40
    normalization: str = "sym"
    exponent: float = 0.0
    oversample: int = 64
    power_iterations: int = 8
    ridge_alpha: float = 1.0
    text_weight: float = TrainSettings.default("text_weight")
    collab_weight: float = TrainSettings.default("collab_weight")


@dataclass
class TrainedSpace:
    """A trained item space. `collab` is aligned to the previous space (if any); `vectors` is what to score."""

    vectors: NDArray[Any]  # (n_items, text dim + config.dim) float32
    collab: NDArray[Any]  # (n_items, config.dim) float64, cold rows filled from text
    warm_mask: NDArray[Any]  # rows with at least one co-occurrence
    text_map: NDArray[Any]  # W: text @ W ~ collab
    rotation: NDArray[Any] | None  # applied to align onto `previous`, None without one
    config: SpaceConfig
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)
    peak_bytes_estimate: int = 0


def train(events: Interactions, n_items: int, item_text: NDArray[Any], config: SpaceConfig | None = None,
          seed: int = 0, previous: TrainedSpace | None = None) -> TrainedSpace:
    """co-occurrence -> factors -> rotation onto `previous` -> ridge map fills cold rows -> hybrid matrix."""
    config = config or SpaceConfig()
    clock: dict[str, float] = {}
    start = time.perf_counter()
    C = cooccurrence(events.user_ids, events.item_rows, events.times, n_items, window_seconds=config.window_seconds,
                     half_life_seconds=config.half_life_seconds, max_neighbours=config.max_neighbours)
    clock["cooccurrence"] = time.perf_counter() - start
    mark = time.perf_counter()
    collab = item_factors(C, config.dim, seed=seed, method=config.normalization, exponent=config.exponent,
                          oversample=config.oversample, power_iterations=config.power_iterations)
    warm = np.asarray(C.sum(axis=1)).ravel() > 0
    clock["factors"] = time.perf_counter() - mark
    mark = time.perf_counter()
    rotation = None
    if previous is not None:
        shared = warm[: len(previous.warm_mask)].copy()
        shared &= previous.warm_mask[: len(shared)]
        rows = len(shared)
        if previous.collab.shape[1] != collab.shape[1]:
            raise ValueError("a retrain can only be aligned to a space of the same collaborative dim")
        rotation = procrustes(collab[:rows], previous.collab[:rows], shared)
        collab = collab @ rotation
    W = ridge_map(item_text, collab, warm, config.ridge_alpha)
    collab[~warm] = apply_map(item_text[~warm], W)
    vectors = hybrid_vectors(item_text, collab, config.text_weight, config.collab_weight)
    clock["map_align_hybrid"] = time.perf_counter() - mark
    clock["total"] = time.perf_counter() - start
    return TrainedSpace(vectors=vectors, collab=collab, warm_mask=warm, text_map=W, rotation=rotation,
                        config=config, seed=seed, seconds=clock,
                        peak_bytes_estimate=_peak_bytes(len(events), C.nnz, n_items, item_text.shape[1], config))


def _peak_bytes(n_events: int, nnz: int, n_items: int, text_dim: int, config: SpaceConfig) -> int:
    """The largest live set: the pair buffer plus the matrix it is added to, or the factorization's blocks."""
    pair_bytes = min(n_events * config.max_neighbours, _PAIR_CHUNK + n_events) * (8 + 8 + 8)
    sorted_events = n_events * (8 + 8 + 8) * 2
    matrix_bytes = nnz * (8 + 4) * 3  # total, its transpose, their sum
    width = min(n_items, config.dim + config.oversample)
    factor_bytes = nnz * (8 + 4) * 2 + n_items * width * 8 * 3
    hybrid_bytes = n_items * (text_dim + config.dim) * (8 * 2 + 4)
    return int(max(pair_bytes * 2 + sorted_events + matrix_bytes, factor_bytes, hybrid_bytes))
