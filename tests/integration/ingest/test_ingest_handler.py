"""The real ingest handler on moto (over HTTP) with the sample events of events/: exact DynamoDB and DLQ state."""

import base64
import hashlib
import json
from unittest import mock

import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from pulse import aws
from pulse.events.behaviour import parse_event
from pulse.events.dead_letters import SqsDeadLetters
from pulse.interest.model import DEFAULT_TYPE_WEIGHTS, TypeWeights
from pulse.settings import DEFAULT_HALF_LIVES
from tests.builders import behaviour, kinesis_event, kinesis_record, sequence_number
from tests.integration.conftest import (
    CrashingEncoder,
    FailingWrites,
    dead_letters,
    emitted_metrics,
    function_handler,
    ingest_with,
    sample_event,
    table_items,
)
from tests.scenarios import (
    OTHER_EVENTS,
    POISON_REASONS,
    SCENARIOS,
    T0,
    duplicate_event_ids,
    late_events,
    render,
    valid_batch,
)

WEIGHTS = TypeWeights(DEFAULT_TYPE_WEIGHTS)


def stored_state(item):
    """(history, recent items, applied sequence numbers) of a raw DynamoDB item, as the store reads them."""
    from pulse.interest.store import read_state, user_interest_model

    return read_state(user_interest_model("pulse-raw-items").from_raw_data(item))


def stored_vectors(item) -> dict[str, tuple[np.ndarray, float]]:
    """Each scale's residual as stored (exact length, float16 direction) and its time."""
    from pulse.interest.store import _to_domain, user_interest_model

    user = _to_domain(user_interest_model("pulse-raw-items").from_raw_data(item))
    return {name: (state.vector, state.t) for name, state in user.scales.items()}


def assert_close_vector(actual, expected):
    """Equal up to the stored direction's float16 rounding (2^-11 of the vector's length per component)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2.0**-11 * float(np.linalg.norm(expected)) + 1e-9)


def expected_vectors(encoder, payloads) -> dict[str, tuple[np.ndarray, float]]:
    """The interest model written out directly: sum of w·2^(-(T-t)/h)·e over the unique events."""
    events = list({event.event_id: event for event in map(parse_event, payloads)}.values())
    embeddings = encoder.encode([event.text for event in events])
    horizon = max(event.ts for event in events)
    return {name: (sum(WEIGHTS.weight(event) * 2 ** (-(horizon - event.ts) / half_life) * embedding
                       for event, embedding in zip(events, embeddings, strict=True)), horizon)
            for name, half_life in DEFAULT_HALF_LIVES.items()}


def assert_state(item, encoder, payloads):
    expected = expected_vectors(encoder, payloads)
    stored = stored_vectors(item)
    assert stored.keys() == expected.keys()
    for name, (vector, horizon) in expected.items():
        assert stored[name][1] == horizon
        assert_close_vector(stored[name][0], vector)


def test_sample_events_are_generated_from_the_builders():
    for name in [*SCENARIOS, *OTHER_EVENTS]:
        assert sample_event(name) == json.loads(render(name)), f"events/{name}.json drifted: python -m tests.scenarios"


def test_a_valid_batch_is_applied_with_one_write_per_user(stack, ingest, encoder):
    assert ingest(sample_event("ingest-valid-batch")) == {"batchItemFailures": []}
    items = table_items(stack)
    assert sorted(items) == ["186", "196", "22"]
    by_user = {}
    for payload in valid_batch():
        by_user.setdefault(payload["user_id"], []).append(payload)
    for user_id, payloads in by_user.items():
        item = items[user_id]
        assert_state(item, encoder, payloads)
        assert int(item["event_count"]["N"]) == len(payloads)
        assert int(item["version"]["N"]) == 1  # one conditional write per user per batch
        assert int(item["expires_at"]["N"]) > float(item["updated_at"]["N"])
    # The history, recent items and stream positions travel in one compressed attribute (store.pack_state).
    assert "recent_items" not in items["22"] and "history" not in items["22"]
    assert list(stored_state(items["22"])[1]) == ["100", "288", "313"]
    assert stored_state(items["196"])[2] == {"shardId-000000000000": sequence_number(3)}
    assert dead_letters(stack) == []


def test_a_users_item_expires_inactive_user_ttl_days_after_its_last_write(stack, monkeypatch):
    """InactiveUserTtlDays (a non-default 45 here) reaches the ingest function and sets each item's expires_at."""
    from pulse.wiring import reset_caches

    monkeypatch.setitem(stack.parameters, "InactiveUserTtlDays", "45")
    with function_handler(stack, "IngestFunction") as handler:
        reset_caches()
        assert handler(sample_event("ingest-valid-batch")) == {"batchItemFailures": []}
    for item in table_items(stack).values():
        assert int(item["expires_at"]["N"]) == pytest.approx(float(item["updated_at"]["N"]) + 45 * 86400, abs=1)


def test_poison_records_are_parked_with_payload_and_reason_and_the_rest_applies(stack, ingest, encoder):
    event = sample_event("ingest-poison-batch")
    assert ingest(event) == {"batchItemFailures": []}
    item = table_items(stack)["305"]
    valid = [json.loads(base64.b64decode(event["Records"][i]["kinesis"]["data"])) for i in (0, 8)]
    assert int(item["event_count"]["N"]) == 2
    assert_state(item, encoder, valid)

    letters = {letter["sequence_number"]: letter for letter in dead_letters(stack)}
    assert len(letters) == len(POISON_REASONS)
    for position, reason in POISON_REASONS.items():
        record = event["Records"][position - 1]["kinesis"]
        letter = letters[record["sequenceNumber"]]
        assert reason in letter["reason"]
        assert letter["data_base64"] == record["data"]  # the full payload, byte for byte
        assert letter["shard_id"] == "shardId-000000000000"
        assert letter["partition_key"] == record["partitionKey"]
        assert letter["truncated"] is False
    parsed = letters[event["Records"][6]["kinesis"]["sequenceNumber"]]["payload"]
    assert parsed["item_id"] == "999999"


def test_a_batch_delivered_twice_changes_nothing(stack, ingest):
    event = sample_event("ingest-valid-batch")
    ingest(event)
    before = table_items(stack)
    assert ingest(event) == {"batchItemFailures": []}
    assert table_items(stack) == before  # not even a write: versions unchanged


def test_duplicate_event_ids_count_once(stack, ingest, encoder):
    ingest(sample_event("ingest-duplicate-event-ids"))
    item = table_items(stack)["42"]
    assert int(item["event_count"]["N"]) == 3
    assert_state(item, encoder, duplicate_event_ids())


def test_events_older_than_the_stored_state_are_discounted_to_its_time(stack, ingest, encoder):
    ingest(sample_event("ingest-late-events"))
    item = table_items(stack)["77"]
    assert_state(item, encoder, late_events())
    newest_first = [{**payload, "user_id": "78"} for payload in late_events()]
    assert newest_first == sorted(newest_first, key=lambda payload: payload["ts"], reverse=True)
    for offset, payload in enumerate(newest_first):  # one batch each: every later one is older than the state
        ingest(kinesis_event([payload], first_sequence=900 + offset))
        assert {t for _, t in stored_vectors(table_items(stack)["78"]).values()} == {newest_first[0]["ts"]}
    other = table_items(stack)["78"]
    assert_state(other, encoder, newest_first)
    for name, (vector, horizon) in stored_vectors(item).items():
        assert_close_vector(stored_vectors(other)[name][0], vector)
        assert stored_vectors(other)[name][1] == horizon


def test_many_users_in_one_batch(stack, ingest):
    assert ingest(sample_event("ingest-many-users")) == {"batchItemFailures": []}
    items = table_items(stack)
    assert len(items) == 50
    assert {int(item["event_count"]["N"]) for item in items.values()} == {2}
    assert {int(item["version"]["N"]) for item in items.values()} == {1}


def test_a_failed_user_write_is_retried_from_its_records_and_converges(stack, ingest, encoder):
    event = sample_event("ingest-valid-batch")
    with ingest_with(stack, store=lambda real: FailingWrites(real.store, "186")) as failing:
        response = failing(event)
    failed = [failure["itemIdentifier"] for failure in response["batchItemFailures"]]
    assert failed == [sequence_number(4), sequence_number(5)]
    assert "186" not in table_items(stack)

    # Lambda retries from the lowest failed record: 196's and 22's records after it come again.
    retry = {"Records": [r for r in event["Records"] if int(r["kinesis"]["sequenceNumber"]) >= int(failed[0])]}
    before = table_items(stack)
    assert ingest(retry) == {"batchItemFailures": []}
    after = table_items(stack)
    assert after["22"] == before["22"]  # already applied: untouched
    assert_state(after["186"], encoder, [p for p in valid_batch() if p["user_id"] == "186"])


def test_an_encoder_failure_fails_the_batch_for_retry_then_recovers(stack, ingest):
    event = sample_event("ingest-valid-batch")
    with ingest_with(stack, load_embedder=lambda real: CrashingEncoder) as crashing, \
            pytest.raises(BatchProcessingError):  # every record failed: Lambda retries the whole batch
        crashing(event)
    assert table_items(stack) == {}
    assert ingest(event) == {"batchItemFailures": []}
    assert len(table_items(stack)) == 3


def test_records_whose_dead_letter_cannot_be_sent_are_retried(stack, ingest):
    event = sample_event("ingest-poison-batch")
    unreachable = SqsDeadLetters("http://127.0.0.1:1/nowhere", None)
    with ingest_with(stack, dead_letters=lambda real: unreachable) as parking_fails:
        response = parking_fails(event)
    failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
    assert failed == {event["Records"][position - 1]["kinesis"]["sequenceNumber"] for position in POISON_REASONS}
    assert dead_letters(stack) == []
    assert ingest(event) == {"batchItemFailures": []}  # SQS back: parked now, valid records not re-applied
    assert len(dead_letters(stack)) == len(POISON_REASONS)
    assert int(table_items(stack)["305"]["event_count"]["N"]) == 2


def test_a_dead_letter_that_sqs_lists_as_failed_in_its_batch_is_retried_not_lost(stack, ingest):
    """SendMessageBatch succeeds as a call but may refuse some entries (`Failed`): their records must be reported
    as batch item failures, so that Lambda delivers them again."""
    sqs = aws.client("sqs")
    real_send = sqs.send_message_batch
    refused = []

    def refuse_the_first_entry(QueueUrl, Entries):  # noqa: N803 - boto3's parameter names
        first, rest = Entries[0], Entries[1:]
        refused.append(json.loads(first["MessageBody"])["sequence_number"])
        answer = real_send(QueueUrl=QueueUrl, Entries=rest)
        return {**answer, "Failed": [*answer.get("Failed", []), {"Id": first["Id"], "SenderFault": False,
                                                                  "Code": "InternalError", "Message": "injected"}]}

    with mock.patch.object(sqs, "send_message_batch", side_effect=refuse_the_first_entry):
        response = ingest(sample_event("ingest-poison-batch"))
    assert len(refused) == 1
    assert [failure["itemIdentifier"] for failure in response["batchItemFailures"]] == refused
    assert len(dead_letters(stack)) == len(POISON_REASONS) - 1


def test_more_than_ten_dead_letters_are_sent_in_batches_of_at_most_ten(stack, ingest):
    """SQS refuses a SendMessageBatch of more than 10 entries (TooManyEntriesInBatchRequest, as moto does)."""
    event = kinesis_event([f"not json {index}" for index in range(23)])
    sqs = aws.client("sqs")
    with mock.patch.object(sqs, "send_message_batch", wraps=sqs.send_message_batch) as send:
        assert ingest(event) == {"batchItemFailures": []}
    assert [len(call.kwargs["Entries"]) for call in send.call_args_list] == [10, 10, 3]
    assert sorted(letter["sequence_number"] for letter in dead_letters(stack)) == sorted(
        record["kinesis"]["sequenceNumber"] for record in event["Records"])


def test_a_dead_letter_always_fits_sqs_and_a_payload_too_big_for_it_waits_in_the_bucket(stack, ingest):
    """A 64 KB record of accented text used to become a 278 KB message (base64 plus its JSON escaped), over SQS's
    256 KiB: refused, so the record was retried until it expired. Now its JSON is left out; a record too big for
    any message (Kinesis takes up to 1 MiB) is kept in the bucket under dead-letters/ and the message says where."""
    accented = behaviour("e1", "u1", item_id="100", text="é" * 32_000)  # text over its limit; 64 KB of UTF-8
    huge = behaviour("e2", "u1", item_id="100", context="x" * 200_000)  # over the 64 KiB record limit
    event = {"Records": [kinesis_record(json.dumps(accented, ensure_ascii=False).encode(), 1, partition_key="u1"),
                         kinesis_record(huge, 2)]}
    data = [base64.b64decode(record["kinesis"]["data"]) for record in event["Records"]]
    assert len(data[0]) < 65_536
    assert ingest(event) == {"batchItemFailures": []}

    letters = {letter["sequence_number"]: letter for letter in dead_letters(stack)}
    first, second = letters[sequence_number(1)], letters[sequence_number(2)]
    assert base64.b64decode(first["data_base64"]) == data[0] and first["payload"] is None
    assert "text is 32000 characters" in first["reason"]
    assert "data_base64" not in second and second["truncated"] is False
    assert second["reason"] == f"record is {len(data[1])} bytes; the limit is 65536 bytes"
    bucket = stack.name_of("AWS::S3::Bucket")
    prefix = f"s3://{bucket}/dead-letters/"
    assert second["payload_location"].startswith(prefix)
    key = second["payload_location"].removeprefix(f"s3://{bucket}/")
    assert stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == data[1]
    assert second["data_sha256"] == hashlib.sha256(data[1]).hexdigest()


COUNTERS = ("EventsAccepted", "EventsRejected", "EventsDeduplicated", "RecordsRedelivered", "EventsOfForgottenUsers",
            "RecordsFailed", "UserWrites")


def test_the_ingest_emits_its_counters_and_latency_as_cloudwatch_metrics_per_batch(stack, capsys):
    """Each invocation prints one embedded-metric-format line (namespace Pulse) with the batch's counts."""
    from pulse.wiring import interest_store

    def counters(handler, event, **expected):
        capsys.readouterr()
        handler(event)
        emitted = emitted_metrics(capsys.readouterr().out)
        (latency,), unit = emitted.pop("BatchLatency")
        assert unit == "Milliseconds" and latency > 0
        assert emitted == {name: ([float(expected.get(name, 0))], "Count") for name in COUNTERS}

    with function_handler(stack, "IngestFunction", metrics=True) as handler:
        valid = sample_event("ingest-valid-batch")
        with ingest_with(stack, metrics=True, store=lambda real: FailingWrites(real.store, "186")) as failing:
            counters(failing, valid, EventsAccepted=6, RecordsFailed=2, UserWrites=2)
        counters(handler, {"Records": valid["Records"][3:]}, EventsAccepted=2, RecordsRedelivered=3, UserWrites=1)
        counters(handler, sample_event("ingest-duplicate-event-ids"), EventsAccepted=3, EventsDeduplicated=2,
                 UserWrites=1)
        counters(handler, sample_event("ingest-poison-batch"), EventsAccepted=2, EventsRejected=len(POISON_REASONS),
                 UserWrites=1)
        assert interest_store().delete("305") is True
        late = behaviour("late-305", "305", type="search", ts=T0 + 20, text="made before the deletion")
        counters(handler, kinesis_event([late], first_sequence=100), EventsOfForgottenUsers=1)
