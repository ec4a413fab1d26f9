"""Scoring, filters, top-k and the popularity fallback, on synthetic catalogues (pure NumPy)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.catalog.version import in_memory_catalog
from pulse.interest.model import ScaleState, UserInterest
from pulse.serving.recommend import (
    TOP_K_BLOCK,
    Recommendations,
    ScoredItem,
    allowed_mask,
    recommend,
    similar_items,
    top_k,
)

HALF_LIVES = {"short": 1800.0, "long": 30 * 86400.0}
BLEND = {"short": 0.5, "long": 0.5}


def random_catalog(n=500, dim=16, seed=0, **columns):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return in_memory_catalog([f"i{i}" for i in range(n)], matrix, titles=[f"title {i}" for i in range(n)],
                             **columns)


def user_towards(catalog, rows, t=1000.0, weight=1.0, recent=None):
    vector = weight * catalog.embeddings[rows].astype(np.float64).sum(axis=0)
    return UserInterest(user_id="u", scales={name: ScaleState(vector.copy(), t) for name in HALF_LIVES},
                        recent_items=recent or {})


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.floats(-5, 5, allow_nan=False), st.just(float("-inf"))), min_size=0, max_size=60),
       st.integers(1, 70))
def test_top_k_agrees_with_a_full_sort(values, k):
    scores = np.array(values, dtype=np.float64)
    expected = [i for i in sorted(range(len(values)), key=lambda i: (-values[i], i)) if np.isfinite(values[i])][:k]
    assert top_k(scores, k).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=80), st.integers(1, 20))
def test_top_k_breaks_ties_by_index_like_a_stable_sort(values, k):
    scores = np.array(values, dtype=np.float32)
    assert top_k(scores, k).tolist() == np.argsort(-scores, kind="stable")[:k].tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.sampled_from([3, 1000, None]), st.floats(0, 0.9999))
def test_the_block_prefilter_on_large_arrays_agrees_with_a_stable_sort(seed, k, distinct, unavailable_share):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(TOP_K_BLOCK * 64 * 4, TOP_K_BLOCK * 64 * 4 + 3000))  # the fast path, and a remainder
    scores = (rng.integers(0, distinct, size) if distinct else rng.standard_normal(size)).astype(np.float32)
    scores[rng.random(size) < unavailable_share] = -np.inf
    expected = [row for row in np.argsort(-scores, kind="stable") if np.isfinite(scores[row])][:k]
    assert top_k(scores, k).tolist() == expected


def test_top_k_on_random_catalogues_matches_brute_force():
    catalog = random_catalog(n=5000, dim=32, seed=3)
    query = catalog.embeddings[7] + catalog.embeddings[9]
    scores = catalog.embeddings @ query
    assert top_k(scores, 10).tolist() == np.argsort(-scores, kind="stable")[:10].tolist()


def test_personal_recommendations_follow_the_interest_and_exclude_what_was_seen():
    catalog = random_catalog()
    user = user_towards(catalog, [3, 4], recent={"i3": 900.0, "i4": 950.0})
    result = recommend(catalog, user, k=5, at=1000.0, half_lives=HALF_LIVES, blend_weights=BLEND)
    assert result.strategy == "personal"
    ids = [item.item_id for item in result.items]
    assert "i3" not in ids and "i4" not in ids
    expected_scores = catalog.embeddings @ (catalog.embeddings[3] + catalog.embeddings[4])
    expected_scores[[3, 4]] = -np.inf
    assert ids == [f"i{row}" for row in np.argsort(-expected_scores)[:5]]
    assert all(item.reason.startswith("close to title ") for item in result.items)
    scores = [item.score for item in result.items]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)

    single = user_towards(catalog, [3], recent={"i3": 900.0})
    kept = recommend(catalog, single, k=5, at=1000.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                     exclude_seen=False)
    assert kept.items[0].item_id == "i3" and kept.items[0].score == pytest.approx(1.0)


def test_category_and_availability_filters():
    n = 100
    categories = [["Comedy"] if i % 2 else ["Drama", "War"] for i in range(n)]
    available = np.array([i % 10 != 1 for i in range(n)])
    catalog = random_catalog(n=n, categories=categories, available=available)
    user = user_towards(catalog, [1])
    result = recommend(catalog, user, k=100, at=1000.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                       category="comedy", exclude_seen=False)
    rows = [catalog.index[item.item_id] for item in result.items]
    assert rows and all(row % 2 == 1 and row % 10 != 1 for row in rows)
    assert len(rows) == 40
    assert recommend(catalog, user, k=5, at=1000.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                     category="Western").items == []
    assert not allowed_mask(catalog, exclude={"i0", "unknown"})[0]


def test_unknown_or_faded_users_get_the_popular_fallback_without_nan():
    popularity = np.arange(50, dtype=float)
    catalog = random_catalog(n=50, popularity=popularity)
    for user in (None, user_towards(catalog, [1], t=0.0), user_towards(catalog, [1], weight=0.0)):
        result = recommend(catalog, user, k=3, at=10 * 365 * 86400.0, half_lives=HALF_LIVES, blend_weights=BLEND)
        assert result.strategy == "popular"
        assert [item.item_id for item in result.items] == ["i49", "i48", "i47"]
        assert [item.score for item in result.items] == [1.0, pytest.approx(48 / 49), pytest.approx(47 / 49)]
        assert all(np.isfinite(item.score) for item in result.items)


def test_a_catalogue_without_popularity_still_answers_finite_scores():
    catalog = random_catalog(n=5)
    result = recommend(catalog, None, k=3, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND)
    assert [item.score for item in result.items] == [0.0, 0.0, 0.0]


def test_similar_items_exclude_the_item_itself():
    catalog = random_catalog()
    similar = similar_items(catalog, "i10", 5)
    assert "i10" not in [item.item_id for item in similar]
    scores = catalog.embeddings @ catalog.embeddings[10]
    scores[10] = -np.inf
    assert [item.item_id for item in similar] == [f"i{row}" for row in np.argsort(-scores)[:5]]


def test_a_user_is_expressed_in_any_space_the_residual_included_even_when_it_is_zero():
    """A text-space residual of zero (a neutral rating, an interest decayed to nothing) next to history, in a
    hybrid space of another dimensionality: the history scores, the residual adds nothing, nothing breaks."""
    from pulse.catalog.version import hybrid_vectors
    from pulse.interest.model import Engagement, ScaleState
    from pulse.serving.recommend import scale_vectors

    rng = np.random.default_rng(5)
    text, collab = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    hybrid = in_memory_catalog([f"i{n}" for n in range(6)], hybrid_vectors(text, collab, 0.5, 0.5),
                               text_to_collab=rng.normal(size=(4, 3)), text_weight=0.5, collab_weight=0.5)
    user = UserInterest(user_id="u", scales={"long": ScaleState(np.zeros(4), 10.0),
                                             "short": ScaleState(text[2].copy(), 10.0)},
                        history=[Engagement(5.0, "i1", "like"), Engagement(6.0, "gone", "like")])
    vectors = scale_vectors(user, hybrid, 10.0, {"short": 1e9, "long": 1e9})
    np.testing.assert_allclose(vectors["long"], 2.0 * hybrid.embeddings[1], atol=1e-6)  # "gone" counts nothing
    np.testing.assert_allclose(vectors["short"], 2.0 * hybrid.embeddings[1] + hybrid.embed_texts(text[2:3])[0],
                               atol=1e-5)
    np.testing.assert_allclose(hybrid.text_vectors_for(["i2"])["i2"], text[2], atol=1e-6)


def test_the_history_is_weighed_and_decayed_at_query_time_and_events_after_it_count_undecayed():
    """README, the interest model: each scale is Σ w_i·2^(−(now−t_i)/h)·row(item_i) over the history, an event
    after `now` counting at full weight."""
    from pulse.interest.model import DEFAULT_TYPE_WEIGHTS, Engagement
    from pulse.serving.recommend import scale_vectors

    rows = np.eye(3)
    catalog = in_memory_catalog(["a", "b", "c"], rows)
    history = [Engagement(0.0, "a", "click"), Engagement(100.0, "b", "purchase"), Engagement(500.0, "c", "like")]
    user = UserInterest(user_id="u", scales={}, history=history)
    vectors = scale_vectors(user, catalog, 300.0, {"short": 100.0, "long": 1000.0})
    for name, half_life in (("short", 100.0), ("long", 1000.0)):
        expected = (DEFAULT_TYPE_WEIGHTS["click"] * 2 ** (-300 / half_life) * rows[0]
                    + DEFAULT_TYPE_WEIGHTS["purchase"] * 2 ** (-200 / half_life) * rows[1]
                    + DEFAULT_TYPE_WEIGHTS["like"] * rows[2])  # dated after the question: undecayed
        np.testing.assert_allclose(vectors[name], expected, rtol=1e-12)


def test_the_trending_prior_adds_its_weight_to_each_cosine_and_only_then():
    trending = np.random.default_rng(8).random(50)
    trending /= trending.max()
    catalog = random_catalog(n=50, trending=trending)
    user = user_towards(catalog, [3, 4])
    query = catalog.embeddings[3].astype(np.float64) + catalog.embeddings[4]
    cosine = catalog.embeddings @ (query / np.linalg.norm(query))

    def served(weight):
        result = recommend(catalog, user, k=50, at=1000.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                           exclude_seen=False, popularity_weight=weight)
        assert result.strategy == "personal"
        return [catalog.index[item.item_id] for item in result.items], np.array([item.score for item in result.items])

    for weight, expected in ((0.0, cosine), (0.4, cosine + 0.4 * trending)):
        rows, scores = served(weight)
        assert rows == np.argsort(-expected, kind="stable").tolist()
        np.testing.assert_allclose(scores, expected[rows], rtol=0, atol=1e-6)
    assert served(0.4)[0][:10] != served(0.0)[0][:10]  # the prior changes what is recommended


def test_the_popular_fallback_uses_the_trending_prior_only_when_the_catalogue_gives_no_popularity():
    trending = np.array([0.2, 1.0, 0.0, 0.6, 0.4])
    without = random_catalog(n=5, trending=trending)
    result = recommend(without, None, k=3, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND)
    assert result.strategy == "popular"
    assert [(item.item_id, item.score) for item in result.items] == [("i1", 1.0), ("i3", 0.6), ("i4", 0.4)]
    uploaded = random_catalog(n=5, trending=trending, popularity=np.array([10.0, 0.0, 40.0, 20.0, 0.0]))
    result = recommend(uploaded, None, k=3, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND)
    assert [(item.item_id, item.score) for item in result.items] == [("i2", 1.0), ("i3", 0.5), ("i0", 0.25)]


def test_a_known_user_without_interest_gets_the_popular_fallback_even_with_min_strength_zero():
    """PULSE_MIN_STRENGTH may be 0. A user whose interest is exactly zero (a neutral rating, nothing else) then has
    no direction to score with: the popular fallback, as for a weak interest (not NaN scores and no items)."""
    catalog = in_memory_catalog(["a", "b"], np.eye(2), popularity=np.array([1.0, 2.0]))
    user = UserInterest(user_id="u", scales={"long": ScaleState(np.zeros(2), 0.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 on the way
        result = recommend(catalog, user, k=2, at=0.0, half_lives={"long": 100.0}, blend_weights={"long": 1.0},
                           min_strength=0.0)
    assert result == Recommendations("popular", [ScoredItem("b", 1.0, "popular"), ScoredItem("a", 0.5, "popular")])


def test_an_empty_top_k_is_an_integer_array_that_still_indexes():
    for scores, k in ((np.full(5, -np.inf), 3), (np.zeros(0), 3), (np.zeros(TOP_K_BLOCK * 16 * 4), 0)):
        best = top_k(scores, k)
        assert best.dtype == np.int64 and best.tolist() == []
        assert np.arange(len(scores))[best].tolist() == []


def test_the_block_prefilter_starts_at_exactly_block_x_max_k_16_x_4_scores_and_only_there(monkeypatch):
    """The prefilter (k = 1 included, an array of whole blocks included) hands the exact selection only the scores
    reaching the threshold; below its size the exact selection sees every score. Either way, the stable order."""
    import pulse.serving.recommend

    seen = []

    def exact(scores, k):
        seen.append(len(scores))
        return exact_top_k(scores, k)

    exact_top_k = pulse.serving.recommend._exact_top_k
    monkeypatch.setattr(pulse.serving.recommend, "_exact_top_k", exact)
    rng = np.random.default_rng(11)
    for k, size, prefiltered in ((1, TOP_K_BLOCK * 16 * 4, True), (1, TOP_K_BLOCK * 16 * 4 - 1, False),
                                 (20, TOP_K_BLOCK * 20 * 4, True), (100, TOP_K_BLOCK * 100 * 4 - 1, False),
                                 (100, 10_000, False)):  # fewer blocks than k: the prefilter cannot work
        scores = rng.standard_normal(size).astype(np.float32)
        seen.clear()
        assert top_k(scores, k).tolist() == np.argsort(-scores, kind="stable")[:k].tolist()
        assert (seen[0] < size / 100) if prefiltered else (seen == [size])


def test_the_interest_and_the_scores_weigh_the_history_with_the_type_weights_given():
    """Custom type weights reach the interest; no prior unless a weight is given, even when the version has one;
    scores are cosines to six decimals; with nothing recent, the reason is the interest itself."""
    from pulse.interest.model import DEFAULT_TYPE_WEIGHTS, Engagement, TypeWeights
    from pulse.serving.recommend import interest_vector

    catalog = in_memory_catalog(["a", "b", "c"], np.eye(3), trending=np.array([0.0, 0.0, 1.0]))
    weights = TypeWeights({**DEFAULT_TYPE_WEIGHTS, "click": 3.0, "like": 1.0})
    user = UserInterest(user_id="u", scales={}, history=[Engagement(0.0, "a", "click"), Engagement(0.0, "b", "like")])
    settings_ = {"half_lives": {"long": 1e12}, "blend_weights": {"long": 1.0}}
    np.testing.assert_allclose(interest_vector(user, catalog, 0.0, type_weights=weights, **settings_),
                               np.array([3.0, 1.0, 0.0]) / np.sqrt(10.0), rtol=1e-12)
    result = recommend(catalog, user, k=3, at=0.0, type_weights=weights, **settings_)
    reason = "matches your recent interest"
    assert result == Recommendations("personal", [ScoredItem("a", 0.948683, reason), ScoredItem("b", 0.316228, reason),
                                                  ScoredItem("c", 0.0, reason)])


def test_a_query_given_is_scored_by_its_direction_and_a_strength_of_exactly_min_strength_is_enough():
    catalog = in_memory_catalog(["a", "b"], np.eye(2))
    result = recommend(catalog, None, k=2, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                       query=np.array([3.0, 4.0]), min_strength=5.0)
    reason = "matches your recent interest"
    assert result == Recommendations("personal", [ScoredItem("b", 0.8, reason), ScoredItem("a", 0.6, reason)])


def test_scores_and_the_prior_are_summed_in_float32_as_the_catalogue_is_stored():
    """One float32 matrix-vector product, the catalogue never copied to float64: the sixth decimal shows it."""
    catalog = in_memory_catalog(["a", "b"], np.eye(2), trending=np.array([0.02, 0.02]))
    query = {"k": 2, "at": 0.0, "half_lives": HALF_LIVES, "blend_weights": BLEND, "query": np.array([0.01, 1.0])}
    reason = "matches your recent interest"
    assert recommend(catalog, None, **query).items == [ScoredItem("b", 0.99995, reason),
                                                       ScoredItem("a", 0.009999, reason)]  # float64: 0.01
    assert recommend(catalog, None, popularity_weight=0.4, **query).items == [
        ScoredItem("b", 1.00795, reason), ScoredItem("a", 0.018, reason)]  # float64: 0.017999


def test_the_popular_fallback_names_the_category_and_scores_relative_to_the_peak_to_six_decimals():
    catalog = random_catalog(n=4, popularity=np.array([1.0, 3.0, 2.0, 0.0]),
                             categories=[["Comedy"], ["Comedy"], ["Comedy"], []])
    result = recommend(catalog, None, k=2, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND, category="Comedy")
    assert result == Recommendations("popular", [ScoredItem("i1", 1.0, "popular in Comedy"),
                                                 ScoredItem("i2", 0.666667, "popular in Comedy")])
    # An unknown user falls back whatever min_strength, on a catalogue of one dimension too.
    line = in_memory_catalog(["a", "b"], np.ones((2, 1)), popularity=np.array([1.0, 2.0]))
    assert recommend(line, None, k=1, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                     min_strength=0.0) == Recommendations("popular", [ScoredItem("b", 1.0, "popular")])
    empty = in_memory_catalog([], np.zeros((0, 4)))
    assert recommend(empty, None, k=3, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND) == \
        Recommendations("popular", [])


def test_similar_items_and_personal_reasons_name_the_title_or_else_the_id_with_six_decimal_scores():
    third = 1 / np.sqrt(3.0)
    catalog = in_memory_catalog(["a", "b", "c"], np.array([[1.0, 0, 0], [third, third, third], [0, 1.0, 0]]),
                                titles=["Alpha", None, "Gamma"])
    assert similar_items(catalog, "a", 2) == [ScoredItem("b", 0.57735, "similar to Alpha"),
                                              ScoredItem("c", 0.0, "similar to Alpha")]
    assert similar_items(catalog, "b", 1) == [ScoredItem("a", 0.57735, "similar to b")]
    for seen, anchor in (("a", "Alpha"), ("b", "b")):
        user = UserInterest(user_id="u", scales={}, history=[], recent_items={seen: 0.0})
        result = recommend(catalog, user, k=1, at=0.0, half_lives=HALF_LIVES, blend_weights=BLEND,
                           query=catalog.embeddings[1].astype(np.float64))
        assert result.items[0].reason == f"close to {anchor}, which you engaged with"
