"""The learned item space: co-occurrence, factors, text->collab map, alignment across retrains, hybrid rows."""

import numpy as np
import pytest

from pulse.interest.model import ScaleState, decay_to, fold_events
from pulse.training.collaborative import (
    Interactions,
    SpaceConfig,
    apply_map,
    cooccurrence,
    hybrid_vectors,
    item_factors,
    procrustes,
    ridge_map,
    train,
)

CLUSTERS, ITEMS_PER_CLUSTER = 3, 30


def clustered_events(seed: int, users_per_cluster: int = 40, events_per_user: int = 12, stray: float = 0.1,
                     keep: float = 1.0) -> tuple[Interactions, np.ndarray]:
    """Each user group watches its own cluster of items (a few minutes apart), with a `stray` share of
    events in other clusters. -> (events, each user's cluster)."""
    rng = np.random.default_rng(seed)
    users, items, times, groups = [], [], [], []
    for cluster in range(CLUSTERS):
        for _ in range(users_per_cluster):
            user = len(groups)
            groups.append(cluster)
            own = rng.choice(ITEMS_PER_CLUSTER, events_per_user, replace=False) + cluster * ITEMS_PER_CLUSTER
            strays = rng.random(events_per_user) < stray
            own[strays] = rng.integers(0, CLUSTERS * ITEMS_PER_CLUSTER, int(strays.sum()))
            start = rng.uniform(0, 1e7)
            users += [user] * events_per_user
            items += own.tolist()
            times += (start + np.cumsum(rng.uniform(10, 600, events_per_user))).tolist()
    kept = np.random.default_rng(seed + 1).random(len(items)) < keep
    events = Interactions(np.array(users)[kept], np.array(items)[kept], np.array(times)[kept])
    return events, np.array(groups)


def unit_rows(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_cooccurrence_weighs_pairs_by_time_apart_within_the_window():
    # user 0: items 0 and 1 are 10 s apart (half-life 10 s -> 0.5); item 2 comes 990 s later (outside the window).
    # user 1: item 0 twice (never a pair with itself), item 1 at the same second as the second 0 (weight 1)
    # and 5 s after the first (2^-0.5).
    C = cooccurrence(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 0, 0, 1]),
                     np.array([0.0, 10.0, 1000.0, 0.0, 5.0, 5.0]), 4, window_seconds=100.0, half_life_seconds=10.0)
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 0.5 + 2**-0.5 + 1.0
    np.testing.assert_allclose(C.toarray(), expected)


def test_cooccurrence_only_pairs_events_up_to_max_neighbours_apart():
    users, items, times = np.zeros(3, dtype=int), np.array([0, 1, 2]), np.array([0.0, 1.0, 2.0])
    near = cooccurrence(users, items, times, 3, window_seconds=1e9, half_life_seconds=np.inf, max_neighbours=1)
    every = cooccurrence(users, items, times, 3, window_seconds=1e9, half_life_seconds=np.inf, max_neighbours=5)
    assert near[0, 2] == 0 and near[0, 1] == near[1, 2] == 1
    assert every[0, 2] == 1


def test_cooccurrence_is_symmetric_with_a_zero_diagonal_whatever_the_input_order():
    events, _ = clustered_events(seed=0)
    order = np.random.default_rng(1).permutation(len(events))
    C = cooccurrence(events.user_ids[order], events.item_rows[order], events.times[order], 90,
                     window_seconds=3600.0, half_life_seconds=600.0)
    again = cooccurrence(events.user_ids, events.item_rows, events.times, 90,
                         window_seconds=3600.0, half_life_seconds=600.0)
    assert abs(C - C.T).max() < 1e-12
    assert not C.diagonal().any()
    assert abs(C - again).max() < 1e-9
    assert C.nnz > 0


def reference_cooccurrence(users, items, times, n_items, window, half_life, neighbours):
    """Pair by pair, per user, in (time, item) order: what the vectorized version must equal."""
    C = np.zeros((n_items, n_items))
    for user in np.unique(users):
        mine = sorted(zip(times[users == user], items[users == user], strict=True))
        for first, (t1, i1) in enumerate(mine):
            for t2, i2 in mine[first + 1: first + 1 + neighbours]:
                if t2 - t1 <= window and i1 != i2:
                    C[i1, i2] += 2 ** (-(t2 - t1) / half_life)
                    C[i2, i1] += 2 ** (-(t2 - t1) / half_life)
    return C


@pytest.mark.parametrize("seed", range(5))
def test_cooccurrence_equals_the_pair_by_pair_definition(seed):
    rng = np.random.default_rng(seed)
    size = 200
    users, items = rng.integers(0, 8, size), rng.integers(0, 15, size)
    times = rng.integers(0, 400, size).astype(float)  # many ties, as in MovieLens
    C = cooccurrence(users, items, times, 15, window_seconds=150.0, half_life_seconds=60.0, max_neighbours=4)
    np.testing.assert_allclose(C.toarray(), reference_cooccurrence(users, items, times, 15, 150.0, 60.0, 4))


def test_cooccurrence_rejects_rows_outside_the_catalogue():
    with pytest.raises(ValueError, match="item rows"):
        cooccurrence(np.array([0, 0]), np.array([0, 5]), np.array([0.0, 1.0]), 5, window_seconds=10.0,
                     half_life_seconds=10.0)


def test_factors_separate_the_clusters():
    events, _ = clustered_events(seed=0)
    C = cooccurrence(events.user_ids, events.item_rows, events.times, 91, window_seconds=86400.0,
                     half_life_seconds=3600.0)
    factors = item_factors(C, 3, seed=0)
    assert not factors[90].any()  # item 90 never occurs: its row is zero
    cosine = unit_rows(factors[:90]) @ unit_rows(factors[:90]).T
    cluster = np.arange(90) // ITEMS_PER_CLUSTER
    same = cluster[:, None] == cluster[None, :]
    assert cosine[same].mean() > 0.9
    assert cosine[~same].mean() < 0.2
    np.fill_diagonal(cosine, -np.inf)
    assert (cluster[cosine.argmax(axis=1)] == cluster).all()


def test_ridge_map_recovers_a_planted_linear_map():
    rng = np.random.default_rng(0)
    text, planted = rng.normal(size=(300, 16)), rng.normal(size=(16, 8))
    collab = text @ planted + rng.normal(scale=1e-3, size=(300, 8))
    warm = np.arange(300) < 250
    collab[~warm] = 0.0  # cold rows carry no signal and must not be fitted
    W = ridge_map(text, collab, warm, alpha=1e-6)
    np.testing.assert_allclose(W, planted, atol=1e-3)
    np.testing.assert_allclose(apply_map(text[~warm], W), text[~warm] @ planted, atol=1e-2)


def test_procrustes_recovers_a_planted_rotation_from_the_shared_rows_only():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(100, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    new = old @ rotation.T
    shared = np.arange(100) < 60
    new[~shared] = rng.normal(size=(40, 8)) * 100  # rows only one side knows must not matter
    R = procrustes(new, old, shared)
    np.testing.assert_allclose(R @ R.T, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(R, rotation, atol=1e-10)
    np.testing.assert_allclose(new[shared] @ R, old[shared], atol=1e-10)


def interest(space_vectors, events, user, half_life=3600.0):
    mine = events.user_ids == user
    times = events.times[mine]
    state = fold_events(ScaleState.empty(space_vectors.shape[1]), times, np.ones(int(mine.sum())),
                        space_vectors[events.item_rows[mine]], half_life)
    return decay_to(state, float(times.max()), half_life)


def top10(vectors, query):
    return set(np.argsort(-(vectors @ query))[:10].tolist())


def ring_events(seed: int, keep: float = 1.0, users: int = 150, per_user: int = 12) -> Interactions:
    """Items on a circle of tastes; each user watches items near their own spot. Unlike clusters this gives
    rankings within a neighbourhood a meaning, and degenerate eigenpairs (cos/sin) that only a rotation aligns."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(90) / 90
    user_ids, items, times = [], [], []
    for user in range(users):
        affinity = np.exp(4.0 * np.cos(angles - rng.uniform(0, 2 * np.pi)))
        user_ids += [user] * per_user
        items += rng.choice(90, per_user, replace=False, p=affinity / affinity.sum()).tolist()
        times += (rng.uniform(0, 1e7) + np.cumsum(rng.uniform(10, 600, per_user))).tolist()
    kept = np.random.default_rng(seed + 1).random(len(items)) < keep
    return Interactions(np.array(user_ids)[kept], np.array(items)[kept], np.array(times)[kept])


def test_a_retrain_aligned_by_procrustes_keeps_users_top_10():
    text = unit_rows(np.random.default_rng(7).normal(size=(90, 16)))
    # Few oversampled directions and power iterations: seeds then give genuinely different approximations.
    config = SpaceConfig(dim=8, window_seconds=86400.0, half_life_seconds=3600.0, oversample=4, power_iterations=2)
    events = ring_events(seed=0)
    first = train(events, 90, text, config, 0)
    later = ring_events(seed=0, keep=0.9)  # the next training also sees different data
    aligned = train(later, 90, text, config, 1, previous=first)
    unaligned = train(later, 90, text, config, 1)
    np.testing.assert_allclose(aligned.rotation.T @ aligned.rotation, np.eye(8), atol=1e-9)
    kept, kept_unaligned = [], []
    for user in range(0, 150, 3):
        query = interest(first.vectors, events, user)  # built in the old space and never recomputed
        before = top10(first.vectors, query)
        kept.append(len(before & top10(aligned.vectors, query)))
        kept_unaligned.append(len(before & top10(unaligned.vectors, query)))
    assert np.mean(kept) >= 9 and min(kept) >= 8
    assert np.mean(kept_unaligned) < np.mean(kept) - 3  # the alignment is what keeps them


def test_hybrid_rows_have_the_documented_norms_and_dot_products():
    rng = np.random.default_rng(0)
    text, collab = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 3)) * 7
    collab[4] = 0.0
    rows = hybrid_vectors(text, collab, text_weight=1.0, collab_weight=3.0)
    assert rows.dtype == np.float32 and rows.shape == (5, 7) and rows.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(rows[:, :4], axis=1), 0.5, rtol=1e-6)  # sqrt(1/4)
    np.testing.assert_allclose(np.linalg.norm(rows[:4, 4:], axis=1), np.sqrt(0.75), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rows[:4], axis=1), 1.0, rtol=1e-6)
    assert np.linalg.norm(rows[4]) == pytest.approx(0.5) and not rows[4, 4:].any()
    cos_text = unit_rows(text) @ unit_rows(text).T
    cos_collab = unit_rows(collab[:4]) @ unit_rows(collab[:4]).T
    np.testing.assert_allclose(rows[:4] @ rows[:4].T, 0.25 * cos_text[:4, :4] + 0.75 * cos_collab, atol=1e-6)
    np.testing.assert_allclose(hybrid_vectors(text, collab, 2.0, 6.0), rows)  # only the ratio matters
    with pytest.raises(ValueError):
        hybrid_vectors(text, collab, 0.0, 0.0)


def test_train_fills_cold_items_from_their_text_and_reports_its_cost():
    events, _ = clustered_events(seed=0)
    rng = np.random.default_rng(3)
    text = np.repeat(np.eye(3), [30, 30, 31], axis=0) + rng.normal(scale=0.05, size=(91, 3))
    text[90] = [0.0, 0.0, 1.0]  # an item nobody has touched yet, whose text reads like cluster 2
    space = train(events, 91, text, SpaceConfig(dim=4, ridge_alpha=0.1), 0)
    assert space.vectors.shape == (91, 3 + 4) and space.vectors.dtype == np.float32
    assert space.warm_mask[:90].all() and not space.warm_mask[90]
    assert space.rotation is None
    assert np.linalg.norm(space.collab[90]) > 0
    cosine = unit_rows(space.collab[:90]) @ unit_rows(space.collab[90:])[0]
    assert cosine[60:90].mean() > cosine[:60].mean() + 0.5
    assert set(space.seconds) >= {"cooccurrence", "factors", "total"} and space.peak_bytes_estimate > 0
