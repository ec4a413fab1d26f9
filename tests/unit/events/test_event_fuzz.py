"""Fuzzing the event contract and the ingest pipeline: whatever arrives on the stream, nothing crashes.

Arbitrary bytes, arbitrary JSON and near-valid events (a valid event with one field replaced by arbitrary JSON
or removed) go through decode_record_data + parse_event, and as Kinesis record data through IngestPipeline
with in-memory parts. Every record is either applied or parked with a reason; none is left to be retried.
"""

import base64
import datetime as dt
import json
import math
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pulse.catalog.version import in_memory_catalog
from pulse.events.behaviour import (
    EVENT_TYPES,
    MAX_EPOCH_SECONDS,
    MAX_ID_BYTES,
    MAX_TEXT_LENGTH,
    BehaviourEvent,
    InvalidEventError,
    TimeLimits,
    decode_record_data,
    parse_event,
)
from pulse.events.dead_letters import InMemoryDeadLetters, SqsDeadLetters
from pulse.events.stream import StreamRecord
from pulse.ingest.pipeline import IngestPipeline
from pulse.interest.store import InMemoryInterestStore
from pulse.settings import IngestSettings, Settings
from tests.builders import kinesis_record

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PIPELINE_FUZZ = settings(FUZZ, max_examples=200)
CATALOGUE = {"m1": "Fargo (1996) Crime Drama Thriller", "m2": "Toy Story (1995) Animation Comedy",
             "m3": "Alien (1979) Horror Sci-Fi"}
FIELDS = ("event_id", "user_id", "type", "item_id", "text", "value", "ts", "an_unknown_field")

# Any Unicode, lone surrogates included: JSON can carry them ("\ud800") in plain ASCII bytes.
any_text = st.text(st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs", "Cc"])),
                   max_size=40)
numbers = st.one_of(st.integers(), st.floats(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.sampled_from([0, -1, 1e11, 1e11 + 1, 10**308, 2**1024, 1e308, -0.0]))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, any_text),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
                           max_leaves=12)
identifiers = st.one_of(st.sampled_from(["u1", "u2", "e1", "e2", "42", "m1"]),
                        st.text(st.characters(exclude_categories=("C",)), min_size=1, max_size=MAX_ID_BYTES)
                        .filter(lambda raw: raw == raw.strip()
                                and len(unicodedata.normalize("NFC", raw).encode()) <= MAX_ID_BYTES))
offsets = st.timedeltas(min_value=-dt.timedelta(hours=23), max_value=dt.timedelta(hours=23)).map(dt.timezone)
timestamps = st.one_of(st.floats(min_value=0, max_value=MAX_EPOCH_SECONDS),
                       st.integers(min_value=0, max_value=int(MAX_EPOCH_SECONDS)),
                       st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(5000, 1, 1),
                                    timezones=offsets).map(dt.datetime.isoformat))
texts = st.text(min_size=1, max_size=MAX_TEXT_LENGTH).filter(str.strip)


@st.composite
def valid_events(draw):
    """Events the contract accepts; item events name a catalogue item or carry a text to embed."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    event = {"event_id": draw(identifiers), "user_id": draw(st.sampled_from(["u1", "u2"]) | identifiers),
             "type": event_type, "ts": draw(timestamps)}
    item_id = draw(st.none() | st.sampled_from(sorted(CATALOGUE)) | identifiers)
    text = draw(texts) if event_type == "search" or item_id not in CATALOGUE else draw(st.none() | texts)
    value = draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 10)) \
        if event_type == "rate" else draw(st.none() | st.floats(allow_nan=False, allow_infinity=False))
    for key, field_value in (("item_id", item_id), ("text", text), ("value", value)):
        if field_value is not None:
            event[key] = field_value
    return event


@st.composite
def near_valid_events(draw):
    """A valid event with one field (or an unknown one) set to arbitrary JSON, or removed."""
    event = draw(valid_events())
    field = draw(st.sampled_from(FIELDS))
    if draw(st.integers(0, 4)) == 0:
        event.pop(field, None)
    else:
        event[field] = draw(st.one_of(numbers, any_text, json_values))
    return event


def as_bytes(payload):
    return json.dumps(payload).encode("utf-8")


record_data = st.one_of(
    st.binary(max_size=200),
    json_values.map(as_bytes),
    near_valid_events().map(as_bytes),
    valid_events().map(as_bytes),
)


def assert_within_contract(event: BehaviourEvent):
    """What parse_event promises about an event it returns."""
    for name in ("event_id", "user_id") + (("item_id",) if event.item_id is not None else ()):
        value = getattr(event, name)
        assert 1 <= len(value.encode()) <= MAX_ID_BYTES and unicodedata.is_normalized("NFC", value)
    assert event.type in EVENT_TYPES
    assert math.isfinite(event.ts) and 0 <= event.ts <= MAX_EPOCH_SECONDS
    assert event.item_id is not None or event.text is not None
    if event.text is not None:
        assert event.text.strip() and len(event.text) <= MAX_TEXT_LENGTH
        event.text.encode("utf-8")  # a text the encoder can read: Unicode, no lone surrogates
    assert event.value is None or math.isfinite(event.value)


def outcome(data: bytes, limits: TimeLimits | None = None) -> BehaviourEvent | InvalidEventError:
    """-> the event, or the InvalidEventError; anything else raised is a crash and fails the test."""
    try:
        return parse_event(decode_record_data(data), limits)
    except InvalidEventError as error:
        return error


# The ingest's clock in the pipeline tests: events dated after it (plus the skew) are rejected.
NOW = 2_000_000_000.0


def stream_records(batch: list[bytes]) -> list[StreamRecord]:
    """Put as a well-behaved producer does: the partition key is the event's user_id (NFC)."""
    def key(data: bytes) -> str | None:
        result = outcome(data)
        return result.user_id if isinstance(result, BehaviourEvent) else None

    return [StreamRecord.from_lambda(kinesis_record(data, sequence, partition_key=key(data)))
            for sequence, data in enumerate(batch, start=1)]


def decode_and_parse(data: bytes) -> BehaviourEvent | InvalidEventError:
    result = outcome(data)
    if isinstance(result, InvalidEventError):
        assert str(result), "InvalidEventError without a message"
    else:
        assert_within_contract(result)
    return result


@FUZZ
@given(st.binary(max_size=400))
@example(b'{"event_id": "e", "user_id": "u", "type": "view", "item_id": "m1", "ts": 1' + b"0" * 5000 + b"}")
@example(b'{"event_id": "e", "user_id": "u", "type": "search", "text": "\\ud800", "ts": 1}')
def test_arbitrary_bytes_decode_to_a_valid_event_or_an_invalid_event_error(data):
    """decode_record_data + parse_event raise only InvalidEventError (with a message) or return a valid event."""
    decode_and_parse(data)


@FUZZ
@given(json_values)
def test_arbitrary_json_parses_to_a_valid_event_or_an_invalid_event_error(payload):
    decode_and_parse(as_bytes(payload))


@FUZZ
@given(near_valid_events())
@example({"event_id": "e", "user_id": "u", "type": "view", "item_id": "m1", "ts": 10**400})
@example({"event_id": "e", "user_id": "u", "type": "view", "item_id": "m1", "ts": 1, "value": 10**400})
def test_a_valid_event_with_one_field_mutated_parses_or_is_rejected_with_a_reason(payload):
    decode_and_parse(as_bytes(payload))


@FUZZ
@given(valid_events())
def test_valid_events_parse(payload):
    assert isinstance(decode_and_parse(as_bytes(payload)), BehaviourEvent)


@pytest.fixture(scope="module")
def catalog(encoder):
    return in_memory_catalog(list(CATALOGUE), encoder.encode(list(CATALOGUE.values())))


@PIPELINE_FUZZ
@given(batch=st.lists(record_data, min_size=1, max_size=12))
@example(batch=[as_bytes({"event_id": "e", "user_id": "u", "type": "search", "text": "caf\ud800", "ts": 1})])
def test_every_record_of_any_batch_is_applied_or_parked_with_a_reason(encoder, catalog, batch):
    """accepted + rejected + duplicates == records; no record is left for Lambda to retry."""
    records = stream_records(batch)
    expected = {record.sequence_number: outcome(record.data, Settings().time_limits(NOW)) for record in records}
    store, dead_letters = InMemoryInterestStore(), InMemoryDeadLetters()
    report = IngestPipeline(store, lambda: encoder, catalog, dead_letters, IngestSettings(),
                            clock=lambda: NOW).process(records)

    assert report.failed_sequence_numbers == []
    assert (report.records, report.redelivered) == (len(records), 0)
    assert report.accepted + report.rejected + report.duplicates == len(records)
    assert len(report.rejections) == len(dead_letters.messages) == report.rejected
    by_sequence = {record.sequence_number: record for record in records}
    for (sequence_number, reason), message in zip(report.rejections, dead_letters.messages, strict=True):
        assert isinstance(reason, str) and reason and message["reason"] == reason
        record = by_sequence[sequence_number]
        assert base64.b64decode(message["data_base64"]) == record.data and not message["truncated"]
        if isinstance(expected[sequence_number], BehaviourEvent):  # valid, but its item is unknown and no text
            assert reason.startswith(f"item_id '{expected[sequence_number].item_id}' is not in the catalogue")
        else:
            assert reason == str(expected[sequence_number])
    rejected = {sequence_number for sequence_number, _ in report.rejections}
    for sequence_number, result in expected.items():
        applicable = isinstance(result, BehaviourEvent) and (result.item_id in CATALOGUE or result.text is not None)
        assert (sequence_number in rejected) != applicable, (result, report)
    applied = sum(store.get(user).event_count for user in store.items)
    assert applied == report.accepted


# SendMessage: "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF. Any characters not
# included in this list will be rejected." String attribute values have the same restrictions.
NOT_ALLOWED_BY_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class InMemorySqs:
    """SendMessageBatch in memory, refusing (as SQS does) messages with characters SQS does not allow."""

    def __init__(self):
        self.bodies = []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's parameter names
        failed = []
        for entry in Entries:
            texts = [entry["MessageBody"], *(value["StringValue"] for value in entry["MessageAttributes"].values())]
            if any(NOT_ALLOWED_BY_SQS.search(text) for text in texts):
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "InvalidMessageContents"})
            else:
                self.bodies.append(json.loads(entry["MessageBody"]))
        return {"Failed": failed}


@PIPELINE_FUZZ
@given(batch=st.lists(record_data, min_size=1, max_size=12))
@example(batch=[as_bytes({"event_id": "e", "user_id": "u", "type": "view", "item_id": "bad\x00id", "ts": 1})])
@example(batch=[as_bytes({"event_id": "\ud800", "user_id": "u", "type": "view", "ts": 1})])
@example(batch=[as_bytes({"event_id": "e", "user_id": "u", "type": "\uffff", "ts": 1})])
def test_every_rejected_record_is_accepted_by_the_sqs_dead_letter_queue(encoder, catalog, monkeypatch, batch):
    """Whatever the payload and the reason quote from it, the dead-letter message is one SQS accepts."""
    sqs = InMemorySqs()
    monkeypatch.setattr("pulse.aws.client", lambda service: sqs)
    records = stream_records(batch)
    report = IngestPipeline(InMemoryInterestStore(), lambda: encoder, catalog, SqsDeadLetters("in-memory"),
                            IngestSettings()).process(records)
    assert report.failed_sequence_numbers == []
    assert [body["reason"] for body in sqs.bodies] == [reason for _, reason in report.rejections]
