"""Bounded state: no user's DynamoDB item can outgrow 400 KB, whatever the ids and with every parameter at its
maximum, measured on the item exactly as store.py writes it; the parameters have maxima, in the template and in
the settings alike."""

from datetime import timedelta

import numpy as np
import pytest

from pulse.events.behaviour import MAX_ID_BYTES, BehaviourEvent
from pulse.events.stream import StreamPosition
from pulse.interest.model import (
    HISTORY_MAX_BYTES,
    MAX_DEDUP_WINDOW,
    MAX_HISTORY_EVENTS,
    MAX_RECENT_ITEMS,
    MAX_SCALE_NAME_BYTES,
    MAX_TIME_SCALES,
    MAX_TRACKED_SHARDS,
    RECENT_ITEMS_MAX_BYTES,
    EmbeddedEvent,
    InterestSettings,
    UserInterest,
    apply_user_events,
    history_json,
    recent_items_json,
)
from pulse.interest.store import _to_item, dynamodb_item_bytes, user_interest_model
from pulse.settings import ConfigurationError, Settings
from pulse_dev.local.template import load_template
from tests.paths import REPO_ROOT

DYNAMODB_ITEM_LIMIT = 400 * 1024
ENCODER_DIM = 384  # the bundled encoder's dimension: the residual's size
TEMPLATE = load_template(REPO_ROOT / "template.yaml")


def worst_id(number: int) -> str:
    """MAX_ID_BYTES characters that JSON escapes to two bytes each ('"' and '\\'), distinct per number."""
    return "".join('"' if number >> bit & 1 else "\\" for bit in range(MAX_ID_BYTES))


def random_id(number: int) -> str:
    """MAX_ID_BYTES random printable ASCII characters, distinct per number: what zlib compresses least (the
    stored state is compressed; escaped ids like worst_id's compress to almost nothing)."""
    rng = np.random.default_rng(number)
    return "".join(map(chr, rng.integers(33, 127, MAX_ID_BYTES)))


def worst_case_user(make_id=worst_id) -> tuple[UserInterest, InterestSettings]:
    """Every list at its maximum length, every id at its maximum size, numbers of the longest JSON form."""
    worst_id = make_id
    settings = InterestSettings(
        half_lives={f"{scale}".ljust(MAX_SCALE_NAME_BYTES, "s"): 1800.0 * (scale + 1)
                    for scale in range(MAX_TIME_SCALES)},
        recent_items_limit=MAX_RECENT_ITEMS, dedup_window=MAX_DEDUP_WINDOW, history_limit=MAX_HISTORY_EVENTS)
    user = UserInterest(user_id=worst_id(0), scales={})
    rng = np.random.default_rng(0)

    def text_vectors(item_ids):
        return {item_id: rng.standard_normal(ENCODER_DIM) for item_id in item_ids}

    events = max(MAX_HISTORY_EVENTS, MAX_RECENT_ITEMS, MAX_DEDUP_WINDOW) + 100
    for start in range(0, events, 500):
        batch = [EmbeddedEvent(BehaviourEvent(event_id=worst_id(n + 1), user_id=user.user_id, type="add_to_cart",
                                              ts=float(f"1.{n:016d}e-05"), item_id=worst_id(n + 1),
                                              value=-1.7976931348623157e308),
                               StreamPosition(f"shardId-{n % MAX_TRACKED_SHARDS:0120d}", f"{n:0128d}"), 2.0, None)
                 for n in range(start, min(events, start + 500))]
        apply_user_events(user, batch, settings, text_vectors)
    user.event_count, user.version = 10**15, 10**15
    user.first_event_ts, user.last_event_ts = 1.2345678901234567e-05, 99999999999.99998
    return user, settings


@pytest.mark.parametrize("make_id", [worst_id, random_id])
def test_the_worst_case_user_item_stays_under_dynamodbs_400_kb(make_id):
    user, settings = worst_case_user(make_id)
    assert len(user.scales) == MAX_TIME_SCALES and len(user.recent_event_ids) == MAX_DEDUP_WINDOW
    assert len(user.applied_sequence) == MAX_TRACKED_SHARDS
    # The byte budgets, not the counts, bound the lists of such ids.
    assert len(history_json(user.history).encode()) <= HISTORY_MAX_BYTES
    assert len(recent_items_json(user.recent_items).encode()) <= RECENT_ITEMS_MAX_BYTES
    if make_id is worst_id:  # random ids are shorter in JSON: the counts bind first
        assert len(user.history) < MAX_HISTORY_EVENTS and len(user.recent_items) < MAX_RECENT_ITEMS
    item = _to_item(user_interest_model("pulse-interest"), user, 99999999999.99998, timedelta(days=180))
    size = dynamodb_item_bytes(item.serialize())
    print(f"worst-case user item: {size:,} bytes of {DYNAMODB_ITEM_LIMIT:,}")
    assert size < DYNAMODB_ITEM_LIMIT


def test_the_byte_budget_keeps_the_newest_entries():
    user, _ = worst_case_user()
    newest_item = worst_id(max(MAX_HISTORY_EVENTS, MAX_RECENT_ITEMS, MAX_DEDUP_WINDOW) + 100)
    assert user.history[-1].item_id == newest_item and newest_item in user.recent_items
    assert user.history == sorted(user.history)


def test_item_size_follows_awss_rules():
    """Names and values: a string by its UTF-8 bytes, binary by its bytes, a number by its digits."""
    assert dynamodb_item_bytes({"id": {"S": "é"}}) == 2 + 2
    assert dynamodb_item_bytes({"b": {"B": b"12345678"}}) == 1 + 8
    assert dynamodb_item_bytes({"n": {"N": "12345"}}) == 1 + 3 + 1
    assert dynamodb_item_bytes({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1
    assert dynamodb_item_bytes({"l": {"L": [{"S": "ab"}, {"S": "c"}]}}) == 1 + 3 + 3 + 2


@pytest.mark.parametrize(("parameter", "variable", "maximum"), [
    ("RecentItems", "PULSE_RECENT_ITEMS", MAX_RECENT_ITEMS),
    ("HistoryEvents", "PULSE_HISTORY_EVENTS", MAX_HISTORY_EVENTS),
    ("DedupWindow", "PULSE_DEDUP_WINDOW", MAX_DEDUP_WINDOW),
])
def test_every_parameter_that_sizes_a_user_has_the_same_maximum_in_the_template_and_the_settings(
        parameter, variable, maximum):
    assert TEMPLATE["Parameters"][parameter]["MaxValue"] == maximum
    Settings.from_env({variable: str(maximum)})
    with pytest.raises(ConfigurationError, match=f"{variable}='{maximum + 1}' must be at most {maximum}"):
        Settings.from_env({variable: str(maximum + 1)})


def test_time_scales_are_bounded_in_number_and_name_length():
    too_many = ",".join(f"s{n}={n + 1}" for n in range(MAX_TIME_SCALES + 1))
    with pytest.raises(ConfigurationError, match=f"at most {MAX_TIME_SCALES} time scales"):
        Settings.from_env({"PULSE_HALF_LIVES": too_many})
    with pytest.raises(ConfigurationError, match=f"at most {MAX_SCALE_NAME_BYTES} bytes"):
        Settings.from_env({"PULSE_HALF_LIVES": "x" * (MAX_SCALE_NAME_BYTES + 1) + "=60"})


def test_a_scale_no_longer_served_leaves_the_item():
    user, settings = worst_case_user()
    fewer = InterestSettings(half_lives={"only": 60.0}, history_limit=1)
    search = BehaviourEvent(event_id="new", user_id=user.user_id, type="search", ts=1e9, text="t")
    apply_user_events(user, [EmbeddedEvent(search, None, 1.0, np.ones(ENCODER_DIM))], fewer)
    assert set(user.scales) == {"only"} and set(settings.half_lives).isdisjoint(user.scales)
