"""The interest model at its edges: byte budgets to the byte, history entries leaving for the residual, blends of
empty or unweighted scales, ratings outside the scale, and the stored JSON forms."""

from dataclasses import replace

import numpy as np
import pytest

from pulse.events.behaviour import BehaviourEvent
from pulse.events.stream import StreamPosition
from pulse.interest.model import (
    DEFAULT_TYPE_WEIGHTS,
    HISTORY_MAX_BYTES,
    RECENT_ITEMS_MAX_BYTES,
    EmbeddedEvent,
    Engagement,
    InterestSettings,
    ScaleState,
    TypeWeights,
    UserInterest,
    apply_user_events,
    blend,
    decay_factor,
    decay_to,
    event_digest,
    fold_events,
    history_json,
    recent_items_json,
)
from tests.unit.interest.test_interest import HALF_LIVES, HOUR

DIM = 4


def item_event(index: int, ts: float, item_id: str, *, type_: str = "view", value: float | None = None,
               shard: str = "shardId-0", sequence: int | None = None) -> EmbeddedEvent:
    """An item event of the catalogue (no vector: kept in the history)."""
    event = BehaviourEvent(event_id=f"e{index}", user_id="u", type=type_, ts=ts, item_id=item_id, value=value)
    return EmbeddedEvent(event, StreamPosition(shard, str(1000 + index if sequence is None else sequence)), 1.0, None)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def new_user() -> UserInterest:
    return UserInterest.new("u", HALF_LIVES, DIM)


# --- decay ---------------------------------------------------------------------------------------------------


def test_decay_counts_the_time_since_the_state_time_not_since_zero():
    state = fold_events(ScaleState.empty(2), np.array([10 * HOUR]), np.array([1.0]), np.array([[1.0, 0.0]]), HOUR)
    assert decay_to(state, 11 * HOUR, HOUR) == pytest.approx([0.5, 0.0])


def test_fold_events_leaves_the_state_it_is_given_unchanged():
    before = fold_events(ScaleState.empty(2), np.array([0.0]), np.array([1.0]), np.array([[1.0, 0.0]]), HOUR)
    after = fold_events(before, np.array([HOUR]), np.array([1.0]), np.array([[0.0, 1.0]]), HOUR)
    assert (before.t, list(before.vector)) == (0.0, [1.0, 0.0])
    assert (after.t, after.vector.tolist()) == (HOUR, pytest.approx([0.5, 1.0]))


def test_the_decay_math_runs_in_float64_whatever_the_precision_of_its_inputs():
    """float32 ages and times are widened before the arithmetic: the results equal the float64 computation on
    the same values (float32 arithmetic would be off by ~1e-7)."""
    ages = np.array([0.1, 1000.3, 12345.6], dtype=np.float32)
    np.testing.assert_allclose(decay_factor(ages, HOUR), decay_factor(ages.astype(np.float64), HOUR), rtol=1e-14)

    times = np.array([0.1, 10_000.0], dtype=np.float32)  # 10000 - 0.1 is not a float32
    weights, embeddings = np.array([1.0, 1.0]), np.array([[1.0, 0.0], [0.0, 1.0]])
    narrow = fold_events(ScaleState.empty(2), times, weights, embeddings, HOUR)
    wide = fold_events(ScaleState.empty(2), times.astype(np.float64), weights, embeddings, HOUR)
    np.testing.assert_allclose(narrow.vector, wide.vector, rtol=1e-14)


# --- blend ---------------------------------------------------------------------------------------------------


def test_blend_skips_an_empty_scale_and_still_adds_the_scales_after_it():
    mixed = blend({"short": np.zeros(2), "long": np.array([3.0, 4.0])}, {"short": 1.0, "long": 1.0})
    assert mixed == pytest.approx([0.6, 0.8])


def test_a_scale_without_a_blend_weight_contributes_nothing():
    mixed = blend({"long": np.array([2.0, 0.0]), "retired": np.array([0.0, 5.0])}, {"long": 0.5})
    assert mixed == pytest.approx([0.5, 0.0])


def test_blending_nothing_gives_a_zero_vector_of_the_scales_dimension():
    assert blend({"a": np.zeros(3), "b": np.zeros(3)}, {"a": 1.0}).tolist() == [0.0, 0.0, 0.0]
    assert blend({}, {"a": 1.0}).shape == (0,)


# --- weights, digests, a new user ------------------------------------------------------------------------------


def test_ratings_beyond_the_scale_count_no_more_than_its_ends():
    weights = TypeWeights(DEFAULT_TYPE_WEIGHTS)
    assert weights.weight_of("rate", 9.0) == pytest.approx(DEFAULT_TYPE_WEIGHTS["rate"])
    high_neutral = TypeWeights(DEFAULT_TYPE_WEIGHTS, rating_neutral=4.0, rating_max=5.0)
    assert high_neutral.weight_of("rate", 1.0) == pytest.approx(-DEFAULT_TYPE_WEIGHTS["rate"])


def test_an_event_digest_is_seven_bytes_and_stable():
    """The de-duplication window's size bound (test_state_bounds) counts 7 bytes per id."""
    assert len(event_digest("e1")) == 7 and event_digest("e1") == event_digest("e1") != event_digest("e2")


def test_a_new_user_has_every_scale_empty_at_the_encoder_dimension():
    user = UserInterest.new("alice", ["short", "long"], 3)
    assert user.user_id == "alice" and not user.has_state
    assert {name: (state.vector.tolist(), state.t) for name, state in user.scales.items()} == \
        {"short": ([0.0] * 3, None), "long": ([0.0] * 3, None)}


# --- apply: times, recent items, shards ----------------------------------------------------------------------


def test_first_and_last_event_times_span_every_batch_whatever_their_order():
    config = InterestSettings(half_lives=HALF_LIVES)
    user = new_user()
    spans = []
    for index, ts in enumerate([300.0, 100.0, 200.0]):
        apply_user_events(user, [item_event(index, ts, f"i{index}")], config)
        spans.append((user.first_event_ts, user.last_event_ts))
    assert spans == [(300.0, 300.0), (100.0, 300.0), (100.0, 300.0)]


def test_two_events_alike_but_for_a_value_one_has_and_the_other_lacks_are_both_kept():
    """Found by the soak: a view with a dwell time and one without, same item, same second, made the history's
    sort compare a number with None, so that user's records failed on every retry."""
    config = InterestSettings(half_lives=HALF_LIVES)
    user = new_user()
    apply_user_events(user, [item_event(1, 100.0, "i1", value=30.0)], config)
    apply_user_events(user, [item_event(2, 100.0, "i1"), item_event(3, 100.0, "i1", value=5.0)], config)
    assert [(entry.ts, entry.value) for entry in user.history] == [(100.0, None), (100.0, 5.0), (100.0, 30.0)]
    assert sorted([Engagement(1.0, "a", "view", 2.0), Engagement(1.0, "a", "view", None)]) == [
        Engagement(1.0, "a", "view", None), Engagement(1.0, "a", "view", 2.0)]


def test_events_without_a_stream_position_count_before_positioned_ones_whatever_the_shard_names():
    """The order decides which of two events sharing an event_id counts (the other is a duplicate): events without
    a position (the offline tools') first, in the order given, then by shard and sequence number."""
    config = InterestSettings(half_lives=HALF_LIVES)
    for shard in ("", "A", "shardId-000000000000"):
        user = new_user()
        positioned = item_event(1, 100.0, "with-position", shard=shard, sequence=0)
        unpositioned = replace(item_event(1, 100.0, "without-position"), position=None)
        later = replace(item_event(1, 100.0, "without-position-too"), position=None)
        result = apply_user_events(user, [positioned, later, unpositioned], config)
        assert (result.applied, result.duplicates) == (1, 2)
        assert [entry.item_id for entry in user.history] == ["without-position-too"]


def test_a_late_event_does_not_move_an_items_latest_time_back():
    config = InterestSettings(half_lives=HALF_LIVES)
    user = new_user()
    apply_user_events(user, [item_event(0, 300.0, "a")], config)
    apply_user_events(user, [item_event(1, 100.0, "a")], config)
    assert user.recent_items == {"a": 300.0}


def test_a_first_batch_of_searches_only_remembers_no_items():
    config = InterestSettings(half_lives=HALF_LIVES)
    user = new_user()
    search = BehaviourEvent(event_id="s0", user_id="u", type="search", ts=50.0, text="red shoes")
    result = apply_user_events(user, [EmbeddedEvent(search, StreamPosition("shardId-0", "1"), 1.0, unit(1, 0, 0, 0))],
                               config)
    assert (result.applied, user.recent_items, user.history) == (1, {}, [])
    assert user.scales["long"].vector == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_shard_watermarks_are_ranked_by_sequence_number_not_by_shard_name():
    config = InterestSettings(half_lives=HALF_LIVES, max_tracked_shards=2)
    user = new_user()
    numbers = {"shard-a": 3000, "shard-b": 200, "shard-c": 45}
    apply_user_events(user, [item_event(i, 100.0 + i, f"i{i}", shard=shard, sequence=number)
                             for i, (shard, number) in enumerate(numbers.items())], config)
    assert user.applied_sequence == {"shard-a": "3000", "shard-b": "200"}


# --- the history and its residual ----------------------------------------------------------------------------


def test_an_entry_leaving_the_history_is_folded_in_by_its_text_vector_with_its_own_weight():
    """A one-star rating that leaves the history counts against its item (weight 2 × (1 − 2.5) / 2.5 = −1.2);
    the catalogue is asked only for the leaving item; the entry kept keeps its value."""
    config = InterestSettings(half_lives=HALF_LIVES, history_limit=1)
    user = new_user()
    asked = []

    def text_vectors(item_ids):
        asked.append(list(item_ids))
        return {"a": unit(1, 0, 0, 0), "b": unit(0, 1, 0, 0)}

    apply_user_events(user, [item_event(0, 100.0, "a", type_="rate", value=1.0),
                             item_event(1, 200.0, "b", value=15.0)], config, text_vectors)
    assert asked == [["a"]]
    assert user.history == [Engagement(200.0, "b", "view", 15.0)]
    for state in user.scales.values():
        assert state.t == 100.0
        assert state.vector == pytest.approx([-1.2, 0.0, 0.0, 0.0])


def test_without_text_vectors_an_entry_leaving_the_history_is_dropped():
    config = InterestSettings(half_lives=HALF_LIVES, history_limit=1)
    user = new_user()
    apply_user_events(user, [item_event(0, 100.0, "a"), item_event(1, 200.0, "b")], config)
    assert [entry.item_id for entry in user.history] == ["b"]
    assert all(state.t is None and not state.vector.any() for state in user.scales.values())


def test_the_catalogue_is_not_asked_while_nothing_leaves_the_history():
    config = InterestSettings(half_lives=HALF_LIVES, history_limit=2)
    asked = []
    apply_user_events(new_user(), [item_event(0, 100.0, "a"), item_event(1, 200.0, "b")], config,
                      lambda item_ids: asked.append(list(item_ids)) or {})
    assert asked == []


# --- byte budgets, to the byte -------------------------------------------------------------------------------
#
# The history's budget: its stored JSON less one byte (each row and its separator) within HISTORY_MAX_BYTES.
# The recent items' budget: each item as a pair ["id",ts] and its separator, i.e. its `"id":ts` entry in the
# stored object plus three bytes, within RECENT_ITEMS_MAX_BYTES.


def history_cost(ts: float, item_id: str) -> int:
    return len(history_json([Engagement(ts, item_id, "view")]).encode("utf-8")) - 1


def recent_cost(ts: float, item_id: str) -> int:
    return len(recent_items_json({item_id: ts}).encode("utf-8")) + 1


def events_costing(costs: list[int], cost) -> list[EmbeddedEvent]:
    """Item events, oldest first, whose entries cost exactly `costs` bytes each (by padding their item ids)."""
    events = []
    for index, target in enumerate(costs):
        ts, prefix = 1000.0 + index, f"{index:05d}-"
        item_id = prefix + "x" * (target - cost(ts, prefix))
        assert cost(ts, item_id) == target
        events.append(item_event(index, ts, item_id))
    return events


def costs_summing_to(total: int, size: int = 100) -> list[int]:
    count, rest = divmod(total, size)
    return [size + 1] * rest + [size] * (count - rest)


# The oldest entry costs 100 bytes. Either the newest entries fill the budget exactly (short by 0), or they are
# short by 99 bytes, so that all of them together are one byte over it: either way the oldest alone must go.
OVER_BY = pytest.mark.parametrize("newest_short_by", [0, 99], ids=["newest-fill-it", "one-byte-over"])


@OVER_BY
def test_the_history_keeps_the_newest_entries_that_fit_its_byte_budget_to_the_byte(newest_short_by):
    events = events_costing([100] + costs_summing_to(HISTORY_MAX_BYTES - newest_short_by), history_cost)
    config = InterestSettings(half_lives=HALF_LIVES, history_limit=10_000)
    user = new_user()
    apply_user_events(user, events, config)
    assert [entry.item_id for entry in user.history] == [item.event.item_id for item in events[1:]]
    assert len(history_json(user.history).encode("utf-8")) - 1 <= HISTORY_MAX_BYTES


@OVER_BY
def test_the_recent_items_keep_the_newest_that_fit_their_byte_budget_to_the_byte(newest_short_by):
    events = events_costing([100] + costs_summing_to(RECENT_ITEMS_MAX_BYTES - newest_short_by), recent_cost)
    config = InterestSettings(half_lives=HALF_LIVES, recent_items_limit=10_000, history_limit=10_000)
    user = new_user()
    apply_user_events(user, events, config)
    assert sorted(user.recent_items) == sorted(item.event.item_id for item in events[1:])


# --- the stored JSON forms -----------------------------------------------------------------------------------


def test_the_stored_json_forms_are_compact_and_keep_non_ascii_ids_as_utf8():
    """Compact and unescaped, as the byte budgets count them."""
    assert history_json([Engagement(1.0, "café", "rate", 4.0)]) == '[[1.0,"café","rate",4.0]]'
    assert recent_items_json({"café": 1.0, "b": 2.0}) == '{"café":1.0,"b":2.0}'
