"""The training's gate: the held-out slice, ranking metrics, and scores that agree with what the API serves."""

from dataclasses import replace

import numpy as np
import pytest

from pulse.catalog.version import hybrid_vectors, in_memory_catalog
from pulse.interest.model import DEFAULT_TYPE_WEIGHTS, Engagement, TypeWeights, UserInterest
from pulse.serving.recommend import interest_vector, recommend
from pulse.training.space_quality import (
    Interaction,
    InterestModel,
    Scorer,
    held_out_slice,
    interest_grid,
    paired_difference,
    rank_quality,
    relative_log_counts,
    trending_prior,
)

DAY = 86400.0


def test_ranks_count_ties_against_the_target_and_skip_blocked_items():
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    blocked = np.array([[True, False, False, False], [False, False, False, False]])
    quality = rank_quality(scores, np.array([1, 0]), blocked)
    # user 0: item 0 blocked, item 2 ties -> rank 1; user 1: three items above -> rank 3
    np.testing.assert_allclose(quality.per_user_ndcg, [1 / np.log2(3), 1 / np.log2(5)])
    assert quality.hit == 1.0
    all_equal = rank_quality(np.zeros((1, 20)), np.array([3]), np.zeros((1, 20), dtype=bool))
    assert all_equal.hit == 0.0  # no information is no hit


def test_the_held_out_slice_is_each_users_latest_event_the_most_recent_first():
    events = [Interaction("a", 1, 0.0, "view", None), Interaction("a", 2, 5 * DAY, "view", None),
              Interaction("a", 3, 5 * DAY + 10, "view", None), Interaction("b", 4, 5 * DAY + 20, "view", None),
              Interaction("c", 5, DAY, "view", None), Interaction("c", 6, 2 * DAY, "view", None)]
    queries, rest = held_out_slice(events, 10)
    assert queries.users == ["a", "c"]  # b has nothing earlier to be asked from
    assert queries.targets.tolist() == [3, 6] and queries.times.tolist() == [5 * DAY + 10, 2 * DAY]
    assert [event.row for event in queries.history[0]] == [1, 2]
    assert {event.row for event in rest} == {1, 2, 4, 5}  # a candidate never sees what it is judged on
    newest, _ = held_out_slice(events, 10, max_users=1)
    assert newest.users == ["a"]
    unseen, rest = held_out_slice(events, 10, after=3 * DAY)  # the serving version learned from events until then
    assert unseen.users == ["a"] and {event.row for event in rest} == {1, 2, 4, 5, 6}


def gate_slice(seed=3):
    """40 items in a hybrid space and six users rating five of them, then one view each (held out)."""
    rng = np.random.default_rng(seed)
    text, collab = rng.normal(size=(40, 12)), rng.normal(size=(40, 6))
    vectors = hybrid_vectors(text, collab, 0.25, 0.75)
    events = []
    for user in range(6):
        for step in range(5):
            events.append(Interaction(f"u{user}", int(rng.integers(40)), 1000.0 + 3600 * step, "rate",
                                      float(rng.integers(1, 6))))
        events.append(Interaction(f"u{user}", int(rng.integers(40)), 3 * DAY + user, "view", None))
    queries, earlier = held_out_slice(events, 40)
    assert len(queries) == 6
    return vectors, queries, earlier


def user_state(queries, position):
    return UserInterest(user_id=queries.users[position], scales={}, history=[
        Engagement(event.ts, f"i{event.row}", event.type, event.value) for event in queries.history[position]])


GATE_MODEL = InterestModel({"short": 600.0, "long": 7 * DAY}, {"short": 1.0, "long": 0.2}, "stars")
STARS = TypeWeights(DEFAULT_TYPE_WEIGHTS, rating_weighting="stars")


def test_the_gate_scores_users_as_the_api_ranks_them():
    vectors, queries, _ = gate_slice()
    catalog = in_memory_catalog([f"i{n}" for n in range(40)], vectors)
    model = GATE_MODEL
    scorer = Scorer(queries, vectors)
    for position in range(len(queries)):
        served = vectors @ interest_vector(user_state(queries, position), catalog, queries.times[position],
                                           model.half_lives, model.blend_weights, STARS)
        gate = scorer.scores(model)[position]
        # the same ranking: the gate's scores are the API's up to a positive factor
        factor = np.dot(served, gate) / np.dot(gate, gate)
        assert factor > 0
        np.testing.assert_allclose(gate * factor, served, rtol=1e-6, atol=1e-9)


def test_with_a_trending_prior_the_gate_scores_are_exactly_the_apis():
    """cosine + weight x prior is not proportional to the cosine: the gate must give the API's very numbers."""
    vectors, queries, earlier = gate_slice()
    prior = trending_prior(np.array([e.row for e in earlier]), np.array([e.ts for e in earlier]), 40,
                           at=max(e.ts for e in earlier), half_life=3600.0)
    assert prior.max() == 1.0 and 0 < np.count_nonzero(prior) < 40
    catalog = in_memory_catalog([f"i{n}" for n in range(40)], vectors, trending=prior)
    model = replace(GATE_MODEL, popularity_weight=0.3)
    scorer = Scorer(queries, vectors, prior=prior)
    for position in range(len(queries)):
        served = recommend(catalog, user_state(queries, position), k=40, at=queries.times[position],
                           half_lives=model.half_lives, blend_weights=model.blend_weights, type_weights=STARS,
                           exclude_seen=False, popularity_weight=model.popularity_weight)
        assert served.strategy == "personal" and len(served.items) == 40
        rows = [catalog.index[item.item_id] for item in served.items]
        gate = scorer.scores(model)[position]
        np.testing.assert_allclose([item.score for item in served.items], gate[rows], rtol=0, atol=2e-6)
        cosine = Scorer(queries, vectors).scores(replace(model, popularity_weight=0.0))[position]
        cosine /= np.linalg.norm(interest_vector(user_state(queries, position), catalog, queries.times[position],
                                                 model.half_lives, model.blend_weights, STARS))
        np.testing.assert_allclose(gate - cosine, 0.3 * prior, rtol=0, atol=1e-9)


def test_the_trending_prior_is_the_log_of_decayed_counts_relative_to_the_top_item():
    # item 0: now and one half-life ago (1 + 1/2); item 1: two half-lives ago (1/4); item 2: after `at`,
    # undecayed (1); item 3: nothing
    prior = trending_prior(np.array([0, 0, 1, 2]), np.array([100.0, 90.0, 80.0, 130.0]), 4, at=100.0,
                           half_life=10.0)
    peak = np.log(2.5)
    np.testing.assert_allclose(prior, [1.0, np.log(1.25) / peak, np.log(2.0) / peak, 0.0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(relative_log_counts(np.array([3.0, 1.0, 0.0])), [1.0, 0.5, 0.0], rtol=1e-12)
    assert trending_prior(np.array([], dtype=np.int64), np.array([]), 3, at=5.0, half_life=1.0).tolist() == [0.0] * 3
    assert relative_log_counts(np.zeros(2)).tolist() == [0.0, 0.0] and relative_log_counts(np.zeros(0)).size == 0


def test_the_grid_searches_only_what_the_deployment_did_not_pin():
    pinned = InterestModel({"short": 120.0, "long": DAY}, {"short": 1.0, "long": 1.0}, "flat")
    free = interest_grid()
    assert len({tuple(m.half_lives.values()) for m in free}) == 12 and {m.rating_weighting for m in free} == {
        "stars", "flat"}
    only_weighting = interest_grid(pinned, frozenset({"half_lives", "blend_weights"}))
    assert {(tuple(m.half_lives.values()), tuple(m.blend_weights.values())) for m in only_weighting} == {
        ((120.0, DAY), (1.0, 1.0))}
    assert {m.rating_weighting for m in only_weighting} == {"stars", "flat"}


def test_the_paired_difference_has_a_standard_error():
    from pulse.training.space_quality import Quality

    a = Quality(0, 0.5, 4, np.array([1.0, 0.5, 0.5, 0.0]))
    b = Quality(0, 0.25, 4, np.array([0.5, 0.5, 0.0, 0.0]))
    difference, error = paired_difference(a, b)
    assert difference == pytest.approx(0.25) and error == pytest.approx(np.std([0.5, 0, 0.5, 0], ddof=1) / 2)
