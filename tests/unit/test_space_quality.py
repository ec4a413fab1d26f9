"""The training's gate: the held-out slice, ranking metrics, and scores that agree with what the API serves."""

import numpy as np
import pytest

from pulse.catalog import hybrid_vectors, in_memory_catalog
from pulse.interest import DEFAULT_TYPE_WEIGHTS, Engagement, TypeWeights, UserInterest
from pulse.recommend import interest_vector
from pulse.space_quality import (
    Interaction,
    InterestModel,
    Scorer,
    held_out_slice,
    interest_grid,
    paired_difference,
    rank_quality,
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


def test_the_gate_scores_users_as_the_api_ranks_them():
    rng = np.random.default_rng(3)
    text, collab = rng.normal(size=(40, 12)), rng.normal(size=(40, 6))
    vectors = hybrid_vectors(text, collab, 0.25, 0.75)
    catalog = in_memory_catalog([f"i{n}" for n in range(40)], vectors)
    model = InterestModel({"short": 600.0, "long": 7 * DAY}, {"short": 1.0, "long": 0.2}, "stars")
    events = []
    for user in range(6):
        for step in range(5):
            events.append(Interaction(f"u{user}", int(rng.integers(40)), 1000.0 + 3600 * step, "rate",
                                      float(rng.integers(1, 6))))
        events.append(Interaction(f"u{user}", int(rng.integers(40)), 3 * DAY + user, "view", None))
    queries, _ = held_out_slice(events, 40)
    assert len(queries) == 6
    scorer = Scorer(queries, vectors)
    weights = TypeWeights(DEFAULT_TYPE_WEIGHTS, rating_weighting="stars")
    for position, user in enumerate(queries.users):
        state = UserInterest(user_id=user, scales={}, history=[
            Engagement(event.ts, f"i{event.row}", event.type, event.value) for event in queries.history[position]])
        served = vectors @ interest_vector(state, catalog, queries.times[position], model.half_lives,
                                           model.blend_weights, weights)
        gate = scorer.scores(model)[position]
        # the same ranking: the gate's scores are the API's up to a positive factor
        factor = np.dot(served, gate) / np.dot(gate, gate)
        assert factor > 0
        np.testing.assert_allclose(gate * factor, served, rtol=1e-6, atol=1e-9)


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
    from pulse.space_quality import Quality

    a = Quality(0, 0.5, 4, np.array([1.0, 0.5, 0.5, 0.0]))
    b = Quality(0, 0.25, 4, np.array([0.5, 0.5, 0.0, 0.0]))
    difference, error = paired_difference(a, b)
    assert difference == pytest.approx(0.25) and error == pytest.approx(np.std([0.5, 0, 0.5, 0], ddof=1) / 2)
