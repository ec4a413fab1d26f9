"""The behaviour-event contract: every field validated, with a message naming what was wrong."""

import json

import pytest

from pulse.events.behaviour import (
    EVENT_TYPES,
    MAX_ID_BYTES,
    MAX_RECORD_BYTES,
    MAX_TEXT_LENGTH,
    InvalidEventError,
    TimeLimits,
    decode_record_data,
    encode_event,
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
    ({"user_id": ""}, f"user_id must be 1-{MAX_ID_BYTES} bytes in UTF-8, got 0"),
    ({"user_id": "u" * (MAX_ID_BYTES + 1)}, f"user_id must be 1-{MAX_ID_BYTES} bytes in UTF-8, got 129"),
    ({"user_id": "é" * 65}, f"user_id must be 1-{MAX_ID_BYTES} bytes in UTF-8, got 130"),
    ({"item_id": "bad\x00id"}, "item_id holds a control character U+0000 at position 3"),
    ({"user_id": " 196"}, "user_id has leading or trailing spaces"),
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
    with pytest.raises(InvalidEventError, match=None) as error:
        parse_event(payload)
    assert message in str(error.value)


@pytest.mark.parametrize("payload", [[], "event", 3, None])
def test_an_event_must_be_an_object(payload):
    with pytest.raises(InvalidEventError, match="must be a JSON object"):
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
    with pytest.raises(InvalidEventError) as error:
        parse_timestamp(raw)
    assert message in str(error.value)


def test_record_data_must_be_utf8_json_within_the_size_limit():
    assert decode_record_data(json.dumps({"a": "é"}).encode()) == {"a": "é"}
    with pytest.raises(InvalidEventError, match="not valid UTF-8"):
        decode_record_data(b'{"a": "\xff"}')
    with pytest.raises(InvalidEventError, match="not valid JSON: Expecting value at line 1 column 1"):
        decode_record_data(b"not json")
    with pytest.raises(InvalidEventError, match=f"the limit is {MAX_RECORD_BYTES} bytes"):
        decode_record_data(b" " * (MAX_RECORD_BYTES + 1))
    with pytest.raises(InvalidEventError, match="nested too deeply"):
        decode_record_data(b"[" * 60_000)


@pytest.mark.parametrize(("user_id", "message"), [
    ("alice\u202eecila", "user_id holds a format (invisible or bidi control) character U+202E "
                          "(RIGHT-TO-LEFT OVERRIDE) at position 5"),
    ("\u2066alice", "U+2066 (LEFT-TO-RIGHT ISOLATE) at position 0"),
    ("al\u200bice", "U+200B (ZERO WIDTH SPACE)"),
    ("alice\u200e", "U+200E (LEFT-TO-RIGHT MARK)"),
    ("ali\ufeffce", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("alice\ue000", "private-use character U+E000"),
])
def test_format_and_bidi_control_characters_are_rejected_without_repeating_the_id(user_id, message):
    with pytest.raises(InvalidEventError) as error:
        parse_event(behaviour("e1", user_id, item_id="i1"))
    assert message in str(error.value) and "alice" not in str(error.value)


def test_ids_are_nfc_normalised_so_one_user_has_one_id():
    composed, decomposed = "jos\u00e9", "jose\u0301"
    assert parse_event(behaviour(decomposed, decomposed, item_id=decomposed)).user_id == composed
    event = parse_event(behaviour(decomposed, decomposed, item_id=decomposed))
    assert (event.event_id, event.item_id) == (composed, composed)


def test_id_limits_are_in_utf8_bytes_after_normalisation():
    assert parse_event(behaviour("e", "é" * 64, item_id="i")).user_id == "é" * 64  # 128 bytes
    assert parse_event(behaviour("e", "e\u0301" * 64, item_id="i")).user_id == "é" * 64  # 192 bytes before NFC
    with pytest.raises(InvalidEventError, match="got 132"):
        parse_event(behaviour("e", "\U0001F600" * 33, item_id="i"))  # 33 emoji: 33 characters, 132 bytes


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("ts", "message"), [
    (int(NOW) + 301, "ts 1700000301 is 301 s in the future; the limit is 300 s (PULSE_MAX_CLOCK_SKEW_SECONDS)"),
    ("5138-11-16T09:46:39Z", "s in the future; the limit is 300 s (PULSE_MAX_CLOCK_SKEW_SECONDS)"),
    (NOW + 365 * 86400, "31536000 s in the future"),
])
def test_an_event_dated_beyond_the_clock_skew_is_rejected(ts, message):
    with pytest.raises(InvalidEventError) as error:
        parse_event(behaviour("e", "u", item_id="i", ts=ts), TimeLimits(NOW))
    assert message in str(error.value)


def test_the_skew_and_the_age_horizon_are_the_deployments():
    assert parse_event(behaviour("e", "u", item_id="i", ts=NOW + 300), TimeLimits(NOW)).ts == NOW + 300
    assert parse_event(behaviour("e", "u", item_id="i", ts=NOW + 3000), TimeLimits(NOW, 3600)).ts == NOW + 3000
    old = behaviour("e", "u", item_id="i", ts=881250949)  # MovieLens, 1997: no horizon by default
    assert parse_event(old, TimeLimits(NOW)).ts == 881250949
    with pytest.raises(InvalidEventError, match=r"ts 881250949 is 9476\.3 days old; the limit is 7 days "
                                           r"\(PULSE_MAX_EVENT_AGE_DAYS\)"):
        parse_event(old, TimeLimits(NOW, 300, 7 * 86400))
    assert parse_event(behaviour("e", "u", item_id="i", ts=NOW + 10**6)).ts == NOW + 10**6  # no limits: none


def test_record_data_must_be_standard_json():
    with pytest.raises(InvalidEventError, match="Infinity is not a JSON number"):
        decode_record_data(b'{"a": Infinity}')
    with pytest.raises(InvalidEventError, match="NaN is not a JSON number"):
        decode_record_data(b'{"a": NaN}')
    pretty = json.dumps(behaviour("e", "u", item_id="i"), indent=2).encode()
    assert decode_record_data(pretty)["user_id"] == "u"  # JSON may span lines; the archive reader copes
    assert decode_record_data(json.dumps(behaviour("e", "u", item_id="i")).encode() + b"\n")["user_id"] == "u"


def test_an_event_is_put_on_the_stream_as_one_line_of_compact_standard_json_with_normalised_ids():
    payload = behaviour("e", "jose\u0301", item_id="i", session={"device": "tv"})
    data = encode_event(payload, parse_event(payload))
    assert b"\n" not in data and json.loads(data) == {**payload, "user_id": "jos\u00e9"}
    with pytest.raises(InvalidEventError, match="NaN and Infinity are not JSON numbers"):
        encode_event({**payload, "score": float("inf")}, parse_event(payload))
    big = {**payload, "context": "x" * MAX_RECORD_BYTES}
    with pytest.raises(InvalidEventError, match=f"bytes as JSON; the stream's limit is {MAX_RECORD_BYTES} bytes"):
        encode_event(big, parse_event(big))


@pytest.mark.parametrize(("payload", "kind"), [
    (None, "null"), ([], "an array"), ("event", "a string"), (3, "a number"), (2.5, "a number"), (True, "a boolean"),
])
def test_a_payload_that_is_not_an_object_is_named_by_its_json_type(payload, kind):
    with pytest.raises(InvalidEventError, match=f"an event must be a JSON object, got {kind}$"):
        parse_event(payload)


def test_a_value_too_large_for_a_float_is_named():
    with pytest.raises(InvalidEventError, match="^value is too large a number$"):
        parse_event(behaviour("e", "u", item_id="i", value=10**400))


def test_a_long_bad_timestamp_is_clipped_to_60_characters_in_the_reason():
    raw = "2024-" + "9" * 100
    with pytest.raises(InvalidEventError) as error:
        parse_timestamp(raw)
    assert str(error.value) == f"ts '{raw[:60]}…' is not an ISO-8601 date-time"
    with pytest.raises(InvalidEventError) as error:
        parse_timestamp(raw[:60])  # exactly the limit: shown whole
    assert str(error.value) == f"ts '{raw[:60]}' is not an ISO-8601 date-time"


def test_an_event_exactly_as_old_as_the_horizon_is_accepted():
    horizon = 7 * 86400
    assert parse_event(behaviour("e", "u", item_id="i", ts=NOW - horizon), TimeLimits(NOW, 300, horizon)).ts \
        == NOW - horizon
    with pytest.raises(InvalidEventError, match="days old"):
        parse_event(behaviour("e", "u", item_id="i", ts=NOW - horizon - 1), TimeLimits(NOW, 300, horizon))


def test_every_id_goes_on_the_stream_normalised_as_compact_utf8_json():
    payload = behaviour("e\u0301", "jose\u0301", item_id="cafe\u0301", note="na\u00efve")
    data = encode_event(payload, parse_event(payload))
    assert b", " not in data and b": " not in data and "na\u00efve".encode() in data  # UTF-8, not \\u escapes
    assert json.loads(data) == {**payload, "event_id": "\u00e9", "user_id": "jos\u00e9", "item_id": "caf\u00e9"}


def test_a_lone_surrogate_in_an_ignored_field_is_escaped_and_the_record_stays_compact_standard_json():
    payload = behaviour("e\u0301", "u", item_id="i", note="\ud800")
    data = encode_event(payload, parse_event(payload))
    assert data.isascii() and b", " not in data and b": " not in data
    assert json.loads(data) == {**payload, "event_id": "\u00e9"}
    with pytest.raises(InvalidEventError, match="NaN and Infinity are not JSON numbers"):
        encode_event({**payload, "score": float("nan")}, parse_event(payload))


def test_an_event_that_json_cannot_write_is_refused_with_the_reason():
    payload = behaviour("e", "u", item_id="i", tags={"a"})
    with pytest.raises(InvalidEventError, match=r"^the event cannot be written as JSON \(TypeError\)$"):
        encode_event(payload, parse_event(payload))


def test_records_of_exactly_the_size_limit_are_accepted():
    assert decode_record_data(b'"' + b"x" * (MAX_RECORD_BYTES - 2) + b'"') == "x" * (MAX_RECORD_BYTES - 2)
    payload = behaviour("e", "u", item_id="i", pad="")
    payload["pad"] = "x" * (MAX_RECORD_BYTES - len(encode_event(payload, parse_event(payload))))
    assert len(encode_event(payload, parse_event(payload))) == MAX_RECORD_BYTES
    text = "t" * MAX_TEXT_LENGTH
    assert parse_event(behaviour("e", "u", type="search", text=text)).text == text


@pytest.mark.parametrize(("raw", "message"), [
    (10**400, "ts is too large a number"),
    (-1, "ts must be a finite, non-negative epoch time, got -1"),
    (1_700_000_000_000, "ts 1700000000000 is too large for epoch seconds (milliseconds? divide by 1000)"),
])
def test_bad_numeric_timestamps_are_shown_in_the_reason(raw, message):
    with pytest.raises(InvalidEventError) as error:
        parse_timestamp(raw)
    assert str(error.value) == message


def test_a_lower_case_z_is_utc_too():
    assert parse_timestamp("1997-12-04T15:55:49z") == 881250949.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"text": "\ud800"}, "text is not valid Unicode (it holds a lone surrogate)"),
    ({"value": float("nan")}, "value must be a finite number"),
    ({"text": "  "}, "text is empty"),
    ({"item_id": None}, "an event needs item_id or text (neither was given)"),
    ({"ts": None}, "ts is required (epoch seconds or ISO-8601 with time zone)"),
    ({"type": None}, "type is required"),
])
def test_invalid_fields_have_exact_reasons(changes, message):
    with pytest.raises(InvalidEventError) as error:
        parse_event({**behaviour("e", "u", item_id="i"), **changes})
    assert str(error.value) == message


def test_json_nested_too_deeply_has_an_exact_reason():
    with pytest.raises(InvalidEventError) as error:
        decode_record_data(b"[" * 60_000)
    assert str(error.value) == "record data is not valid JSON: nested too deeply"


@pytest.mark.parametrize(("changes", "message"), [
    ({"type": "\ud800"}, "unknown type '\\ud800'; expected one of"),
    ({"ts": "\ud800x"}, "ts '\\ud800x' is not an ISO-8601 date-time"),
    ({"ts": "2024-01-01T00:00:00\udc80"}, "ts '2024-01-01T00:00:00\\udc80' is not an ISO-8601 date-time"),
])
def test_a_lone_surrogate_is_quoted_escaped_in_the_error_never_a_crash(changes, message):
    """JSON carries lone surrogates in plain ASCII ("\\ud800"); the error quotes them escaped, as valid text."""
    with pytest.raises(InvalidEventError) as raised:
        parse_event({**behaviour("e1", "u1", item_id="m1", ts=1_700_000_000), **changes})
    assert str(raised.value).startswith(message)
    str(raised.value).encode("utf-8")  # valid UTF-8: fit for SQS, the logs and a JSON answer


def test_the_published_schema_of_the_event_changes_only_on_purpose():
    """/openapi.json documents the event with this schema; clients generate code from it. A change to the
    contract's document shows here first: update tests/fixtures/behaviour_event.schema.json with the README."""
    from pulse.events.behaviour import BehaviourEvent
    from tests.paths import REPO_ROOT

    published = json.loads((REPO_ROOT / "tests" / "fixtures" / "behaviour_event.schema.json").read_text())
    assert BehaviourEvent.model_json_schema() == published
    assert published["required"] == ["event_id", "user_id", "type", "ts"]
    assert published["anyOf"] == [{"required": ["item_id"]}, {"required": ["text"]}]
