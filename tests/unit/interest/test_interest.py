"""The interest model: decay math, order independence and exactly-once application."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.events.behaviour import BehaviourEvent
from pulse.events.stream import StreamPosition
from pulse.interest.model import (
    DEFAULT_TYPE_WEIGHTS,
    EmbeddedEvent,
    InterestSettings,
    ScaleState,
    TypeWeights,
    UserInterest,
    apply_user_events,
    blend,
    decay_to,
    event_digest,
    fold_events,
    forget_user,
)
from pulse.interest.store import InMemoryInterestStore

HOUR = 3600.0
HALF_LIVES = {"short": 1800.0, "long": 30 * 86400.0}
DIM = 8


def embedded(index: int, ts: float, *, weight: float = 1.0, seq: int | None = None, item: str | None = None,
             event_id: str | None = None, dim: int = DIM) -> EmbeddedEvent:
    rng = np.random.default_rng(index)
    vector = rng.normal(size=dim)
    event = BehaviourEvent(event_id=event_id or f"e{index}", user_id="u", type="view", ts=ts,
                           item_id=item or f"i{index}")
    position = StreamPosition("shardId-0", str(1000 + (index if seq is None else seq)))
    return EmbeddedEvent(event, position, weight, vector / np.linalg.norm(vector))


def expected_state(events, horizon: float, half_life: float) -> np.ndarray:
    return sum(e.weight * 2 ** (-(horizon - e.event.ts) / half_life) * e.embedding for e in events)


def test_one_half_life_halves_the_interest():
    state = fold_events(ScaleState.empty(2), np.array([0.0]), np.array([1.0]), np.array([[1.0, 0.0]]), HOUR)
    assert decay_to(state, HOUR, HOUR) == pytest.approx([0.5, 0.0])
    assert decay_to(state, 3 * HOUR, HOUR) == pytest.approx([0.125, 0.0])


def test_a_late_event_is_discounted_to_the_state_time():
    state = fold_events(ScaleState.empty(2), np.array([10 * HOUR]), np.array([1.0]), np.array([[1.0, 0.0]]), HOUR)
    late = fold_events(state, np.array([9 * HOUR]), np.array([1.0]), np.array([[0.0, 1.0]]), HOUR)
    assert late.t == 10 * HOUR
    assert late.vector == pytest.approx([1.0, 0.5])


def test_asking_before_the_state_time_never_undoes_events():
    state = fold_events(ScaleState.empty(2), np.array([HOUR]), np.array([2.0]), np.array([[1.0, 0.0]]), HOUR)
    assert decay_to(state, 0.0, HOUR) == pytest.approx([2.0, 0.0])


def test_blend_scales_each_time_scale_to_unit_strength_and_lets_faded_ones_fade():
    strong = np.array([10.0, 0.0])
    faded = np.array([0.0, 0.01])
    mixed = blend({"long": strong, "short": faded}, {"long": 0.5, "short": 0.5})
    assert mixed == pytest.approx([0.5, 0.005])
    assert not blend({"long": np.zeros(2)}, {"long": 1.0}).any()


def test_type_weights_use_ratings_and_dwell():
    weights = TypeWeights(DEFAULT_TYPE_WEIGHTS)

    def weight(event_type, value=None):
        return weights.weight(BehaviourEvent(event_id="e", user_id="u", type=event_type, ts=0.0, item_id="i",
                                             value=value))

    assert weight("rate", 5) == pytest.approx(2.0)
    assert weight("rate", 1) < 0 < weight("rate", 3) < weight("rate", 4)
    assert weight("dislike") < 0 and weight("skip") < 0
    assert weight("view", 3) == pytest.approx(0.05)
    assert weight("view", 600) == weight("view") == 0.5


def test_flat_rating_weighting_counts_every_rating_alike():
    flat = TypeWeights(DEFAULT_TYPE_WEIGHTS, rating_weighting="flat")
    weights = {flat.weight(BehaviourEvent(event_id="e", user_id="u", type="rate", ts=0.0, item_id="i", value=stars))
               for stars in (1, 3, 5)}
    assert weights == {DEFAULT_TYPE_WEIGHTS["rate"]}


times = st.lists(st.floats(min_value=0, max_value=90 * 86400, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(times=times, order=st.randoms(use_true_random=False), data=st.data())
def test_any_order_gives_the_same_state(times, order, data):
    weights = data.draw(st.lists(st.floats(-2, 3), min_size=len(times), max_size=len(times)))
    events = [embedded(i, t, weight=w) for i, (t, w) in enumerate(zip(times, weights, strict=True))]
    shuffled = events[:]
    order.shuffle(shuffled)
    one_by_one = ScaleState.empty(DIM)
    for e in shuffled:
        one_by_one = fold_events(one_by_one, np.array([e.event.ts]), np.array([e.weight]), e.embedding[None], HOUR)
    together = fold_events(ScaleState.empty(DIM), np.array([e.event.ts for e in events]),
                           np.array([e.weight for e in events]), np.stack([e.embedding for e in events]), HOUR)
    horizon = max(times)
    assert one_by_one.t == together.t == horizon
    np.testing.assert_allclose(one_by_one.vector, together.vector, atol=1e-9)
    np.testing.assert_allclose(together.vector, expected_state(events, horizon, HOUR), atol=1e-9)


def apply_in_batches(events, batches, settings_):
    user = UserInterest.new("u", HALF_LIVES, DIM)
    for batch in batches:
        apply_user_events(user, [events[i] for i in batch], settings_)
    return user


@settings(max_examples=60, deadline=None)
@given(times=times, data=st.data())
def test_redelivery_and_duplicates_change_nothing(times, data):
    """Any split into batches, any re-delivery of a prefix (Lambda retry) and producer duplicates converge."""
    config = InterestSettings(half_lives=HALF_LIVES)
    events = [embedded(i, t) for i, t in enumerate(times)]
    clean = apply_in_batches(events, [range(len(events))], config)

    cut = data.draw(st.integers(0, len(events)))
    retry_from = data.draw(st.integers(0, cut))
    # batch 1 applied up to `cut`, then Lambda re-delivers from `retry_from` (records already applied come again)
    redelivered = apply_in_batches(events, [range(cut), range(retry_from, len(events)), range(len(events))], config)
    duplicate_index = data.draw(st.integers(0, len(events) - 1))
    producer_retry = embedded(duplicate_index, times[duplicate_index], seq=len(events) + 5,
                              event_id=f"e{duplicate_index}")
    duplicated = apply_in_batches(events + [producer_retry], [range(len(events) + 1)], config)

    for user in (redelivered, duplicated):
        assert user.event_count == clean.event_count == len(events)
        for name in HALF_LIVES:
            assert user.scales[name].t == clean.scales[name].t
            np.testing.assert_allclose(user.scales[name].vector, clean.scales[name].vector, atol=1e-9)


def test_apply_counts_and_remembers():
    config = InterestSettings(half_lives=HALF_LIVES, recent_items_limit=2, dedup_window=3)
    user = UserInterest.new("u", HALF_LIVES, DIM)
    first = apply_user_events(user, [embedded(0, 100.0), embedded(1, 300.0), embedded(2, 200.0)], config)
    assert (first.applied, first.duplicates, first.redelivered, first.changed) == (3, 0, 0, True)
    assert user.recent_items == {"i1": 300.0, "i2": 200.0}  # newest by event time, bounded
    assert (user.first_event_ts, user.last_event_ts, user.event_count) == (100.0, 300.0, 3)
    assert user.applied_sequence == {"shardId-0": "1002"}

    again = apply_user_events(user, [embedded(2, 200.0)], config)
    assert (again.applied, again.redelivered, again.changed) == (0, 1, False)
    retry = apply_user_events(user, [embedded(2, 200.0, seq=9)], config)
    assert (retry.applied, retry.duplicates) == (0, 1)
    apply_user_events(user, [embedded(3, 400.0), embedded(4, 500.0)], config)
    assert len(user.recent_event_ids) == 3  # the de-duplication window is bounded


def test_sequence_numbers_compare_as_numbers_not_strings():
    """Kinesis sequence numbers are decimal strings that grow in length: "10…" follows "9…" although it sorts
    before it as text, and a redelivered "9…" stays at or below an applied "10…"."""
    config = InterestSettings(half_lives=HALF_LIVES, dedup_window=1)
    user = UserInterest.new("u", HALF_LIVES, DIM)
    apply_user_events(user, [with_sequence(embedded(0, 1.0), "99")], config)
    later = apply_user_events(user, [with_sequence(embedded(1, 2.0), "100")], config)
    assert (later.applied, later.redelivered, user.applied_sequence) == (1, 0, {"shardId-0": "100"})
    again = apply_user_events(user, [with_sequence(embedded(0, 1.0), "99")], config)  # e0 left the window
    assert (again.applied, again.redelivered, user.event_count) == (0, 1, 2)


def with_sequence(item: EmbeddedEvent, sequence_number: str) -> EmbeddedEvent:
    return EmbeddedEvent(item.event, StreamPosition("shardId-0", sequence_number), item.weight, item.embedding)


def test_a_redelivery_after_the_dedup_window_rolled_over_is_skipped_by_the_watermark():
    """The event_ids of a redelivered batch have left the de-duplication window: only the shard's applied
    sequence number can recognise them, and nothing changes."""
    config = InterestSettings(half_lives=HALF_LIVES, dedup_window=2)
    user = UserInterest.new("u", HALF_LIVES, DIM)
    events = [embedded(i, 100.0 + i) for i in range(5)]
    apply_user_events(user, events[:3], config)
    apply_user_events(user, events[3:], config)
    before = (user.event_count, {name: state.vector.copy() for name, state in user.scales.items()})
    again = apply_user_events(user, events[:3], config)  # Lambda delivers the first batch again
    assert (again.applied, again.redelivered, again.duplicates, again.changed) == (0, 3, 0, False)
    assert user.event_count == before[0] == 5
    for name, vector in before[1].items():
        np.testing.assert_array_equal(user.scales[name].vector, vector)


def test_the_dedup_window_keeps_the_newest_event_ids():
    """A producer retry of a recent event (new sequence number, same event_id) is a duplicate; the oldest ids
    are the ones that leave the window."""
    config = InterestSettings(half_lives=HALF_LIVES, dedup_window=3)
    user = UserInterest.new("u", HALF_LIVES, DIM)
    apply_user_events(user, [embedded(i, 100.0 + i) for i in range(5)], config)
    assert user.recent_event_ids == [event_digest(f"e{i}") for i in (2, 3, 4)]
    retry = apply_user_events(user, [embedded(4, 104.0, seq=50)], config)
    assert (retry.applied, retry.duplicates, user.event_count) == (0, 1, 5)
    forgotten = apply_user_events(user, [embedded(0, 100.0, seq=51)], config)  # e0 has left the window
    assert (forgotten.applied, forgotten.duplicates) == (1, 0)


def test_a_deletion_sticks_old_events_are_ignored_and_new_activity_starts_afresh():
    config = InterestSettings(half_lives=HALF_LIVES)
    user = UserInterest.new("u", HALF_LIVES, DIM)
    events = [embedded(i, 100.0 + i) for i in range(5)]
    apply_user_events(user, events, config)
    assert forget_user(user, at=200.0).had_state
    assert (user.event_count, user.scales, user.history, user.recent_items, user.recent_event_ids,
            user.applied_sequence, user.has_state, user.forgotten_at) == (0, {}, [], {}, [], {}, False, 200.0)

    again = apply_user_events(user, events + [embedded(9, 200.0, seq=99)], config)  # replay; one at the deletion
    assert (again.applied, again.forgotten, again.changed, user.has_state) == (0, 6, False, False)

    fresh = apply_user_events(user, [embedded(7, 250.0, seq=50), embedded(3, 103.0, seq=51)], config)
    assert (fresh.applied, fresh.forgotten) == (1, 1)
    assert (user.event_count, user.first_event_ts, user.forgotten_at) == (1, 250.0, 200.0)
    assert not forget_user(UserInterest("v", scales={}), at=1.0).had_state
    assert forget_user(user, at=150.0).had_state and user.forgotten_at == 200.0  # never moves back


def test_the_in_memory_store_closes_the_race_between_a_read_and_a_deletion():
    """The ingest read the user, the user was deleted, the ingest writes: its write fails its version condition,
    the retry reads the tombstone and applies nothing."""
    config = InterestSettings(half_lives=HALF_LIVES)
    store = InMemoryInterestStore(clock=lambda: 1000.0)
    store.update("u", lambda user: apply_user_events(user, [embedded(i, 100.0 + i) for i in range(5)], config))
    read_before = store.get_many(["u"])["u"]
    assert store.delete("u") is True
    result = store.update("u", lambda user: apply_user_events(user, [embedded(5, 900.0)], config),
                          known=read_before)
    assert (result.applied, result.forgotten, store.conflicts) == (0, 1, 1)
    tombstone = store.get("u")
    assert not tombstone.has_state and tombstone.forgotten_at == 1000.0
    assert store.delete("u") is False  # nothing left to forget; the tombstone stays
    assert store.delete("never-seen") is False and store.get("never-seen").forgotten_at == 1000.0


def test_beyond_max_tracked_shards_the_watermarks_of_the_highest_sequence_numbers_are_kept():
    """Sequence numbers compare as numbers ("3000" > "200" > "45" > "10" > "9"), not as text."""
    config = InterestSettings(half_lives=HALF_LIVES, max_tracked_shards=3)
    user = UserInterest.new("u", HALF_LIVES, DIM)
    numbers = {"shard-a": "9", "shard-b": "10", "shard-c": "200", "shard-d": "3000", "shard-e": "45"}
    events = [EmbeddedEvent(item.event, StreamPosition(shard, number), item.weight, item.embedding)
              for item, (shard, number) in zip([embedded(i, 100.0 + i) for i in range(5)], numbers.items(),
                                               strict=True)]
    assert apply_user_events(user, events, config).applied == 5
    assert user.applied_sequence == {"shard-d": "3000", "shard-c": "200", "shard-e": "45"}
    again = apply_user_events(user, events, config)  # a kept shard's watermark skips; a pruned one's cannot
    assert (again.redelivered, again.duplicates, again.applied) == (3, 2, 0)


def test_the_documented_type_weights_and_their_rating_and_dwell_scaling():
    """README: view 0.5, click 1, add_to_cart 2, purchase 3, like 2, dislike -2, skip -0.5, search 1, rate 2;
    `rate` times clip((stars - 2.5) / 2.5, -1, 1); `view` with dwell times clip(seconds / 30, 0.1, 1)."""
    weights = TypeWeights(DEFAULT_TYPE_WEIGHTS)
    documented = {"view": 0.5, "click": 1, "add_to_cart": 2, "purchase": 3, "like": 2, "dislike": -2, "skip": -0.5,
                  "search": 1, "rate": 2}
    assert {kind: weights.weight_of(kind, None) for kind in documented} == documented
    assert [weights.weight_of("rate", stars) for stars in (1, 2, 3, 4, 5)] == pytest.approx([-1.2, -0.4, 0.4, 1.2, 2])
    assert [weights.weight_of("view", seconds) for seconds in (1, 15, 30, 45)] == pytest.approx([0.05, 0.25, 0.5, 0.5])
