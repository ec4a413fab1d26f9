"""The interest store's pure parts and its in-memory implementation: DynamoDB item sizes by AWS's documented rules,
the item <-> domain round trip, the retry backoff's bounds, and the in-memory store's copy/version semantics (the
same as DynamoInterestStore's)."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pulse.interest import store
from pulse.interest.model import Engagement, ScaleState, UserInterest
from pulse.interest.store import (
    InMemoryInterestStore,
    WriteConflictError,
    _backoff,
    _optimistic_update,
    _to_domain,
    _to_item,
    dynamodb_item_bytes,
    user_interest_model,
)

MODEL = user_interest_model("pulse-interest-unit")
NOW = 1_800_000_000.0
TTL = timedelta(days=30)


@dataclass
class Changed:
    changed: bool = True


def add_engagement(user: UserInterest) -> Changed:
    """A mutate that changes the user in place (appends to its history), as apply_user_events does."""
    user.history.append(Engagement(NOW, f"item-{len(user.history)}", "view"))
    user.event_count += 1
    return Changed()


def full_user() -> UserInterest:
    return UserInterest(
        user_id="u1",
        scales={"short": ScaleState(np.array([0.5, -1.25, 3.0]), NOW - 10), "long": ScaleState(np.zeros(3), None)},
        history=[Engagement(NOW - 20, "a", "view"), Engagement(NOW - 10, "b", "rating", 4.5)],
        recent_items={"a": NOW - 20, "b": NOW - 10},
        recent_event_ids=[b"digest1", b"digest2", b"digest3"],
        applied_sequence={"shardId-000000000000": "49650000000000000000000000000000000000000000000000000001"},
        event_count=2,
        first_event_ts=NOW - 20,
        last_event_ts=NOW - 10,
        version=7,
        forgotten_at=NOW - 100,
    )


def stored_round_trip(user: UserInterest) -> UserInterest:
    """The user written as DynamoDB gets it (PynamoDB's wire form) and read back."""
    return _to_domain(MODEL.from_raw_data(_to_item(MODEL, user, NOW, TTL).serialize()))


def assert_same_vector(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the stored direction's float16 rounding (its length is exact)."""
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2.0**-11 * float(np.linalg.norm(expected)))


def assert_same_user(actual: UserInterest, expected: UserInterest) -> None:
    assert actual.scales.keys() == expected.scales.keys()
    for name, state in expected.scales.items():
        assert actual.scales[name].t == state.t
        assert actual.scales[name].vector.dtype == np.float64
        assert_same_vector(actual.scales[name].vector, state.vector)
    rest = ("user_id", "history", "recent_items", "recent_event_ids", "applied_sequence", "event_count",
            "first_event_ts", "last_event_ts", "version", "forgotten_at")
    assert {key: getattr(actual, key) for key in rest} == {key: getattr(expected, key) for key in rest}


# --- item <-> domain ------------------------------------------------------------------------------


def test_every_field_of_a_user_survives_the_write_and_read_back():
    user = full_user()
    assert_same_user(stored_round_trip(user), user)


def test_a_user_with_nothing_recorded_reads_back_empty_not_with_placeholder_values():
    user = UserInterest(user_id="u2", scales={})
    back = stored_round_trip(user)
    assert_same_user(back, user)
    assert back.recent_event_ids == [] and back.history == [] and back.last_event_ts is None


def test_event_digests_are_stored_as_one_binary_of_7_byte_digests_and_split_back_in_order():
    item = _to_item(MODEL, full_user(), NOW, TTL)
    assert item.event_digests == b"digest1digest2digest3" and item.recent_event_ids is None
    assert stored_round_trip(full_user()).recent_event_ids == [b"digest1", b"digest2", b"digest3"]


def test_an_earlier_releases_8_byte_digests_still_recognise_their_events():
    from pulse.interest.model import event_digest

    legacy_digest = hashlib.blake2b(b"e-1", digest_size=8).digest()  # what the earlier release stored
    legacy = MODEL.from_raw_data({"user_id": {"S": "old"}, "version": {"N": "1"}, "event_count": {"N": "1"},
                                  "recent_event_ids": {"B": legacy_digest + b"\x00" * 8}})
    assert _to_domain(legacy).recent_event_ids == [event_digest("e-1"), b"\x00" * 7]


def test_a_tombstone_without_its_own_ttl_expires_ttl_after_the_deletion():
    deleted_at = NOW - 3600
    tombstone = UserInterest(user_id="gone", scales={}, forgotten_at=deleted_at)
    item = _to_item(MODEL, tombstone, NOW, TTL)
    assert item.expires_at == datetime.fromtimestamp(deleted_at, tz=UTC) + TTL
    shorter = _to_item(MODEL, tombstone, NOW, TTL, timedelta(days=2))
    assert shorter.expires_at == datetime.fromtimestamp(deleted_at, tz=UTC) + timedelta(days=2)


# --- item size ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "size"), [
    ({"S": "héllo"}, 6),  # UTF-8 bytes
    ({"B": b"\x00\x01\x02"}, 3),  # raw binary: its length
    ({"B": "AAECAwQF"}, 6),  # base64 in DynamoDB JSON: the decoded length
    ({"N": "12"}, 2),  # 1 byte per two significant digits, rounded up, plus 1
    ({"N": "12345"}, 4),
    ({"N": "-0.0012300"}, 3),  # sign, leading and trailing zeros do not count: 123
    ({"BOOL": True}, 1),
    ({"NULL": True}, 1),
    ({"L": [{"BOOL": False}, {"NULL": True}]}, 3 + 2 * (1 + 1)),  # 3 + one per element
    ({"M": {"ab": {"N": "7"}}}, 3 + 2 + 2 + 1),  # 3 + key + value + one per element
])
def test_attribute_sizes_follow_dynamodbs_documented_rules(value, size):
    assert dynamodb_item_bytes({"attr": value}) == len("attr") + size


@pytest.mark.parametrize(("encoded", "size"), [("AAECAwQ=", 5), ("AAECAw==", 4), ("AA==", 1)])
def test_base64_padding_is_not_counted_as_binary_bytes(encoded, size):
    assert dynamodb_item_bytes({"b": {"B": encoded}}) == 1 + size


def test_item_size_adds_up_attribute_names_and_values():
    item = {"id": {"S": "abc"}, "flag": {"BOOL": True}, "n": {"NULL": True}}
    assert dynamodb_item_bytes(item) == (2 + 3) + (4 + 1) + (1 + 1)


def test_an_unknown_attribute_type_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown DynamoDB type SS"):
        dynamodb_item_bytes({"tags": {"SS": ["a", "b"]}})


# --- conflicts and backoff ------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 0.02), (1, 0.04), (3, 0.16), (5, 0.64), (6, 1.0), (12, 1.0)])
def test_backoff_sleeps_a_uniform_draw_between_zero_and_a_doubling_ceiling_capped_at_one_second(
        monkeypatch, attempt, ceiling):
    draws, sleeps = [], []

    def uniform(low, high):
        draws.append((low, high))
        return high / 2

    monkeypatch.setattr(store.random, "uniform", uniform)
    monkeypatch.setattr(store.time, "sleep", sleeps.append)
    _backoff(attempt)
    assert draws == [(0, pytest.approx(ceiling))]
    assert sleeps == [pytest.approx(ceiling / 2)]


def test_a_write_that_conflicts_every_time_gives_up_naming_the_attempts():
    attempts = []
    with pytest.raises(WriteConflictError, match="after 3 attempts"):
        _optimistic_update("u1", add_engagement, store.UNKNOWN, 3, lambda user_id: None,
                           lambda user, attempt: attempts.append(attempt) or False)
    assert attempts == [0, 1, 2]


def always_conflicting(memory: InMemoryInterestStore) -> InMemoryInterestStore:
    memory._write = lambda user, attempt: False
    return memory


def test_the_in_memory_store_tries_six_times_by_default_like_the_write_attempts_setting():
    memory, calls = always_conflicting(InMemoryInterestStore()), []
    with pytest.raises(WriteConflictError, match="after 6 attempts"):
        memory.update("u1", lambda user: calls.append(user) or Changed())
    assert len(calls) == 6


# --- in-memory store ------------------------------------------------------------------------------


def test_versions_count_writes_from_one_like_pynamodbs_version_attribute():
    memory = InMemoryInterestStore()
    versions = []
    for _ in range(3):
        memory.update("u1", add_engagement)
        versions.append(memory.get("u1").version)
    assert versions == [1, 2, 3]


def test_every_conflict_is_counted():
    memory = InMemoryInterestStore()
    memory.update("u1", add_engagement)
    stale = memory.get("u1")
    for expected in (1, 2):
        memory.update("u1", add_engagement)  # moves the version on: `stale` no longer matches
        memory.update("u1", add_engagement, known=stale)  # conflicts once, then re-reads
        assert memory.conflicts == expected
    assert memory.get("u1").event_count == 5


def test_changing_a_user_read_from_the_store_does_not_change_the_stored_user():
    memory = InMemoryInterestStore()
    memory.update("u1", add_engagement)
    add_engagement(memory.get("u1"))
    add_engagement(memory.get_many(["u1"])["u1"])
    assert len(memory.get("u1").history) == 1


def test_update_works_on_a_copy_of_known_and_leaves_the_callers_user_alone():
    memory = InMemoryInterestStore()
    known = UserInterest(user_id="u1", scales={})
    memory.update("u1", add_engagement, known=known)
    assert known.history == [] and known.event_count == 0 and known.version is None
    assert memory.get("u1").event_count == 1


def test_the_stored_user_is_a_copy_not_the_object_mutate_was_given():
    memory, given = InMemoryInterestStore(), []
    memory.update("u1", lambda user: given.append(user) or add_engagement(user))
    add_engagement(given[0])  # whatever keeps a reference to it afterwards
    assert len(memory.get("u1").history) == 1


def test_get_many_returns_only_the_users_that_exist():
    memory = InMemoryInterestStore()
    for user_id in ("a", "c"):
        memory.update(user_id, add_engagement)
    assert sorted(memory.get_many(["a", "b", "c", "d"])) == ["a", "c"]
    assert memory.get("b") is None and memory.get_many([]) == {}


# --- what a write costs ---------------------------------------------------------------------------


def test_a_realistic_stream_writes_items_of_at_most_2_kb_on_average():
    """MovieLens in time order (the bench's replay, first 5,000 ratings) through the pipeline with the default
    settings, one write per user per batch of 100: the mean item must stay within 2 KB and 2 write units a write,
    where the JSON history, recent items and sequence map made it 4.8 KB (5.3 write units a write)."""
    from pulse.catalog.version import in_memory_catalog
    from pulse_dev.movielens import load_movies, load_ratings, rating_event
    from pulse_dev.write_cost import replay_write_cost

    movies = load_movies()
    vectors = np.random.default_rng(0).standard_normal((len(movies), 384)).astype(np.float32)
    catalog = in_memory_catalog([movie.item_id for movie in movies], vectors, fingerprint="unit")
    cost = replay_write_cost([rating_event(rating) for rating in load_ratings()[:5000]], catalog, 100)
    assert cost["writes"] > 100
    assert cost["mean_item_kb"] <= 2.0
    assert cost["write_units_per_write"] <= 2.0


def test_history_recent_items_and_positions_travel_in_one_compressed_attribute():
    item = _to_item(MODEL, full_user(), NOW, TTL)
    assert item.history is None and item.recent_items is None and item.applied_sequence is None
    assert item.state is not None and item.state[:1] == b"\x78"  # a zlib stream
    serialized = item.serialize()
    assert {"history", "recent_items", "applied_sequence"}.isdisjoint(serialized)


def test_an_item_written_before_the_compressed_state_reads_back_the_same_user():
    """Items of a deployment that ran the earlier release keep their plain attributes until their next write."""
    user = full_user()
    legacy = MODEL.from_raw_data({
        **{key: value for key, value in _to_item(MODEL, user, NOW, TTL).serialize().items() if key != "state"},
        "history": {"S": '[[1799999980.0,"a","view",null],[1799999990.0,"b","rating",4.5]]'},
        "recent_items": {"S": '{"a":1799999980.0,"b":1799999990.0}'},
        "applied_sequence": {"M": {"shardId-000000000000": {"S": user.applied_sequence["shardId-000000000000"]}}},
    })
    assert_same_user(_to_domain(legacy), user)
    assert_same_user(stored_round_trip(_to_domain(legacy)), user)  # and its next write uses the new form


@pytest.mark.parametrize(("times", "column"), [
    ([NOW - 20, NOW - 10, NOW], "ts_steps"),  # whole seconds: stored as differences
    ([0.1, 0.3, 0.7, 1e9 + 0.123456789], "ts_steps"),  # differences that happen to add back bit for bit
    ([0.1, 1e9, 0.2], "ts"),  # differences that do not add back bit for bit: stored as they are
    ([NOW, NOW - 3600.5, NOW + 0.25], "ts_steps"),  # out of order (recent items keep insertion order)
])
def test_times_read_back_bit_for_bit_whatever_their_values(times, column):
    import json
    import zlib

    user = UserInterest(user_id="t", scales={}, history=[Engagement(ts, f"i{n}", "view") for n, ts in
                                                        enumerate(sorted(times))],
                        recent_items={f"i{n}": ts for n, ts in enumerate(times)})
    stored = json.loads(zlib.decompress(_to_item(MODEL, user, NOW, TTL).state))
    assert column in stored["recent_items"]
    back = stored_round_trip(user)
    assert [entry.ts for entry in back.history] == sorted(times)
    assert list(back.recent_items.items()) == list(user.recent_items.items())


def test_a_scale_is_stored_as_its_exact_length_and_a_float16_direction():
    vector = np.random.default_rng(3).standard_normal(384) * 1e6  # far past float16's range: the length keeps it
    user = UserInterest(user_id="s", scales={"long": ScaleState(vector, NOW)})
    (stored,) = _to_item(MODEL, user, NOW, TTL).scales
    assert stored.vector is None and len(stored.direction) == 2 * 384
    assert float(stored.length) == float(np.linalg.norm(vector))
    back = stored_round_trip(user).scales["long"].vector
    assert_same_vector(back, vector)
    assert float(back @ vector) / (np.linalg.norm(back) * np.linalg.norm(vector)) > 1 - 1e-6


def test_a_scale_written_as_float32_before_reads_back_exactly():
    vector = np.array([0.5, -1.25, 3.0])
    legacy = MODEL.from_raw_data({"user_id": {"S": "old"}, "version": {"N": "1"}, "event_count": {"N": "1"},
                                  "scales": {"L": [{"M": {"name": {"S": "short"}, "t": {"N": str(NOW)},
                                                          "vector": {"B": vector.astype("<f4").tobytes()}}}]}})
    np.testing.assert_array_equal(_to_domain(legacy).scales["short"].vector, vector)


def test_a_residual_decayed_below_float32s_range_is_stored_as_zero_not_as_a_number_dynamodb_refuses():
    """A 9-11 day gap on a 30-minute scale leaves lengths like 3e-145; DynamoDB refuses numbers below 1e-130."""
    vector = np.full(384, 1e-146)
    user = UserInterest(user_id="faded", scales={"short": ScaleState(vector, NOW)})
    (stored,) = _to_item(MODEL, user, NOW, TTL).scales
    assert float(stored.length) == 0.0
    assert _to_item(MODEL, user, NOW, TTL).serialize()["scales"]["L"][0]["M"]["length"] == {"N": "0.0"}
    back = stored_round_trip(user).scales["short"]
    assert back.vector.shape == (384,) and not back.vector.any() and back.t == NOW
