"""The behaviour-event contract: every field validated, with a message naming what was wrong."""

import json

import pytest

from pulse.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    MAX_RECORD_BYTES,
    MAX_TEXT_LENGTH,
    InvalidEvent,
    decode_record_data,
    parse_event,
    parse_timestamp,
)
from tests.builders import behaviour


def test_a_complete_event_parses():
    event = parse_event(behaviour("e1", "196", type="rate", item_id="242", value=3, ts=881250949))
    assert (event.event_id, event.user_id, event.type, event.item_id, event.value, event.ts) == (
        "e1", "196", "rate", "242", 3.0, 881250949.0)
    assert event.text is None


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_documented_type_is_accepted(event_type):
    event = parse_event(behaviour("e", "u", type=event_type, text="wireless earbuds", value=4))
    assert event.type == event_type


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert parse_event(behaviour("e", "u", item_id="i", session="abc")).item_id == "i"


@pytest.mark.parametrize(("changes", "message"), [
    ({"event_id": None}, "event_id is required"),
    ({"user_id": None}, "user_id is required"),
    ({"type": None}, "type is required"),
    ({"ts": None}, "ts is required"),
    ({"user_id": 196}, "user_id must be a string, got a number"),
    ({"event_id": ["a"]}, "event_id must be a string, got an array"),
    ({"user_id": ""}, f"user_id must be 1-{MAX_ID_LENGTH} characters, got 0"),
    ({"user_id": "u" * (MAX_ID_LENGTH + 1)}, f"user_id must be 1-{MAX_ID_LENGTH} characters, got 129"),
    ({"item_id": "bad\x00id"}, "item_id 'bad\x00id' has leading/trailing spaces or control characters"),
    ({"user_id": " 196"}, "leading/trailing spaces"),
    ({"type": "teleport"}, "unknown type 'teleport'; expected one of view, click"),
    ({"type": 3}, "unknown type a number"),
    ({"item_id": None, "text": None}, "an event needs item_id or text"),
    ({"text": "   "}, "text is empty"),
    ({"text": 42}, "text must be a string, got a number"),
    ({"text": "x" * (MAX_TEXT_LENGTH + 1)}, f"the limit is {MAX_TEXT_LENGTH}"),
    ({"value": "five"}, "value must be a number, got a string"),
    ({"value": True}, "value must be a number, got a boolean"),
    ({"type": "rate", "value": None}, "type 'rate' needs a numeric value"),
    ({"type": "search", "text": None}, "type 'search' needs text"),
])
def test_invalid_fields_are_named(changes, message):
    payload = behaviour("e1", "u1", item_id="i1", value=4)
    payload.update(changes)
    payload = {key: value for key, value in payload.items() if value is not None}
    with pytest.raises(InvalidEvent, match=None) as error:
        parse_event(payload)
    assert message in str(error.value)


@pytest.mark.parametrize("payload", [[], "event", 3, None])
def test_an_event_must_be_an_object(payload):
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        parse_event(payload)


@pytest.mark.parametrize(("raw", "seconds"), [
    (881250949, 881250949.0),
    (881250949.5, 881250949.5),
    ("1997-12-04T15:55:49Z", 881250949.0),
    ("1997-12-04T16:55:49+01:00", 881250949.0),
    ("1997-12-04T15:55:49.250+00:00", 881250949.25),
])
def test_timestamps_in_epoch_seconds_or_iso_with_zone(raw, seconds):
    assert parse_timestamp(raw) == pytest.approx(seconds)


@pytest.mark.parametrize(("raw", "message"), [
    ("1997-12-04T15:55:49", "has no time zone"),
    ("yesterday", "is not an ISO-8601 date-time"),
    (-1, "non-negative"),
    (float("nan"), "finite"),
    (1_700_000_000_000, "milliseconds?"),
    (True, "got a boolean"),
    ({"s": 1}, "got an object"),
])
def test_bad_timestamps_are_explained(raw, message):
    with pytest.raises(InvalidEvent) as error:
        parse_timestamp(raw)
    assert message in str(error.value)


def test_record_data_must_be_utf8_json_within_the_size_limit():
    assert decode_record_data(json.dumps({"a": "é"}).encode()) == {"a": "é"}
    with pytest.raises(InvalidEvent, match="not valid UTF-8"):
        decode_record_data(b'{"a": "\xff"}')
    with pytest.raises(InvalidEvent, match="not valid JSON: Expecting value at line 1 column 1"):
        decode_record_data(b"not json")
    with pytest.raises(InvalidEvent, match=f"the limit is {MAX_RECORD_BYTES} bytes"):
        decode_record_data(b" " * (MAX_RECORD_BYTES + 1))
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        decode_record_data(b"[" * 60_000)
