"""The dead-letter message at its edges: its fields, its size against SQS's limits (the payload inline, in the
bucket or truncated), the characters SQS accepts, the batches it is sent in, and the re-putting of replayed
records the stream refused."""

import base64
import hashlib
import json
from types import SimpleNamespace

import pytest

from pulse import aws
from pulse.events import dead_letters
from pulse.events.dead_letters import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    DeadLetter,
    InMemoryDeadLetters,
    SqsDeadLetters,
    _chunks,
    _put_all,
    fitted_body,
    sqs_safe,
)
from pulse.events.stream import StreamRecord
from tests.builders import STREAM_ARN, sequence_number

REJECTED_AT = 1_700_000_000.25  # 2023-11-14T22:13:20Z
SHARD = "shardId-000000000001"


def letter(data: bytes, reason: str = "unknown type 'teleport'") -> DeadLetter:
    return DeadLetter(reason, StreamRecord(shard_id=SHARD, sequence_number=sequence_number(7), partition_key="u1",
                                           data=data, arrival_ts=1_699_999_990.5, event_source_arn=STREAM_ARN))


def coordinates(data: bytes, reason: str = "unknown type 'teleport'", rejected_at=REJECTED_AT) -> dict:
    return {"reason": reason, "source": "pulse-ingest", "rejected_at": rejected_at, "event_source_arn": STREAM_ARN,
            "shard_id": SHARD, "sequence_number": sequence_number(7), "partition_key": "u1",
            "approximate_arrival_timestamp": 1_699_999_990.5, "data_sha256": hashlib.sha256(data).hexdigest(),
            "data_bytes": len(data)}


def test_a_message_holds_the_coordinates_the_reason_and_the_bytes_with_their_json():
    data = b'{"a": 1}'
    assert letter(data).message(REJECTED_AT) == {**coordinates(data), "data_base64": "eyJhIjogMX0=",
                                                 "truncated": False, "payload": {"a": 1}}


def test_a_message_whose_payload_is_in_the_bucket_says_where_and_carries_no_bytes():
    data = b'{"a": 1}'
    assert letter(data).message(REJECTED_AT, "s3://b/k") == {**coordinates(data), "payload_location": "s3://b/k",
                                                             "truncated": False}


def test_a_truncated_message_keeps_the_first_bytes_and_no_json_even_when_they_would_parse():
    data = b"12345"  # its first two bytes are the JSON number 12
    assert letter(data).message(REJECTED_AT, inline_bytes=2) == {**coordinates(data), "data_base64": "MTI=",
                                                                "truncated": True, "payload": None}
    assert letter(data).message(REJECTED_AT, inline_bytes=5)["truncated"] is False


def test_the_payload_key_is_the_rejection_day_in_utc_then_the_record_coordinates():
    assert letter(b"x").payload_key(REJECTED_AT) == f"dead-letters/2023-11-14/{SHARD}-{sequence_number(7)}.bin"
    assert letter(b"x").payload_key(1_700_006_400.0).startswith("dead-letters/2023-11-15/")  # 00:00 UTC


def fitted(data: bytes, reason: str, park=None) -> tuple[str, dict]:
    body = fitted_body(letter(data, reason), REJECTED_AT, park)
    return body, json.loads(body)


def reason_filling(data: bytes, **options) -> str:
    """A reason just long enough (ASCII) for the message of `data` to be exactly MAX_MESSAGE_BYTES."""
    message = letter(data, "").message(REJECTED_AT)
    return "r" * (MAX_MESSAGE_BYTES - len(json.dumps({**message, **options})))


def test_a_message_of_exactly_the_limit_keeps_its_payload_json_inline():
    data = json.dumps("x" * 80_000).encode()
    body, message = fitted(data, reason_filling(data))
    assert len(body) == MAX_MESSAGE_BYTES
    assert message == {**coordinates(data, message["reason"]), "data_base64": base64.b64encode(data).decode(),
                       "truncated": False, "payload": "x" * 80_000}


def test_a_message_of_exactly_the_limit_without_its_json_keeps_the_bytes_inline():
    data = json.dumps("é" * 40_000, ensure_ascii=False).encode()  # its JSON escaped is six characters a letter
    body, message = fitted(data, reason_filling(data, payload=None))
    assert len(body) == MAX_MESSAGE_BYTES
    assert message == {**coordinates(data, message["reason"]), "data_base64": base64.b64encode(data).decode(),
                       "truncated": False, "payload": None}


def test_a_payload_too_big_for_a_message_is_parked_under_its_key_and_the_message_says_where():
    data = b"\xff" * 160_000
    parked = []

    def park(key, payload):
        parked.append((key, payload))
        return f"s3://bucket/{key}"

    _, message = fitted(data, "too big", park)
    key = f"dead-letters/2023-11-14/{SHARD}-{sequence_number(7)}.bin"
    assert parked == [(key, data)]
    assert message == {**coordinates(data, "too big"), "payload_location": f"s3://bucket/{key}", "truncated": False}


def test_without_a_bucket_a_payload_too_big_is_truncated_to_the_room_the_message_has():
    data = b"\xff" * 300_000
    body, message = fitted(data, "too big")
    assert len(body) == MAX_MESSAGE_BYTES - 5  # base64 writes 3 bytes as 4 characters
    assert message == {**coordinates(data, "too big"), "data_base64": base64.b64encode(data[:153_215]).decode(),
                       "truncated": True, "payload": None}


def test_a_letter_whose_coordinates_alone_fill_the_message_keeps_none_of_its_bytes():
    _, message = fitted(b"abc", "r" * MAX_MESSAGE_BYTES)
    assert (message["data_base64"], message["truncated"], message["rejected_at"]) == ("", True, REJECTED_AT)


def test_the_in_memory_sink_dates_its_letters_now():
    sink = InMemoryDeadLetters()
    assert sink.send([letter(b"{}")]) == []
    (message,) = sink.messages
    assert isinstance(message["rejected_at"], float) and message["rejected_at"] > REJECTED_AT


ALLOWED = "\t\n\r !~é\ud7ff\ue000\ufffd\U00010000\U0010ffff"


def test_sqs_safe_keeps_every_character_sqs_accepts_up_to_the_edges_of_its_ranges():
    assert sqs_safe(ALLOWED) == ALLOWED
    assert sqs_safe("") == ""


@pytest.mark.parametrize(("char", "escaped"), [
    ("\x00", "\\u0000"), ("\x08", "\\b"), ("\x0b", "\\u000b"), ("\x0c", "\\f"), ("\x1f", "\\u001f"),
    ("\ud800", "\\ud800"), ("\udfff", "\\udfff"), ("\ufffe", "\\ufffe"), ("\uffff", "\\uffff"),
])
def test_sqs_safe_writes_the_characters_sqs_refuses_as_json_escapes(char, escaped):
    assert sqs_safe(f"a{char}b") == f"a{escaped}b"


def test_chunks_are_at_most_the_batch_limit_in_total_size_the_limit_included():
    sizes = [MAX_BATCH_BYTES - 2_000, 1_000, 1_000, 1, MAX_BATCH_BYTES, 1]
    chunks = _chunks([(index, "x" * size) for index, size in enumerate(sizes)])
    assert [[index for index, _ in chunk] for chunk in chunks] == [[0, 1, 2], [3], [4], [5]]
    assert [[index for index, _ in chunk] for chunk in _chunks([(n, "x") for n in range(21)])] == [
        list(range(10)), list(range(10, 20)), [20]]
    assert _chunks([]) == []


class FakeAws:
    """aws.client(...) for SqsDeadLetters: SendMessageBatch calls recorded (each answered by `answer`, which may
    raise), PutObject by `put_object`."""

    def __init__(self, answer=None, put_object=None):
        self.batches: list[list[dict]] = []
        self.answer = answer or (lambda entries: {"Successful": [{"Id": entry["Id"]} for entry in entries]})
        self.put_object = put_object

    def client(self, service):
        if service == "sqs":
            return SimpleNamespace(send_message_batch=self.send_message_batch)
        assert self.put_object is not None, "no bucket here"
        return SimpleNamespace(put_object=self.put_object)

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's parameter names
        assert QueueUrl == "queue"
        self.batches.append(Entries)
        return self.answer(Entries)


@pytest.fixture
def fake_aws(monkeypatch):
    def install(**options):
        fake = FakeAws(**options)
        monkeypatch.setattr(aws, "client", fake.client)
        return fake

    return install


def test_sqs_letters_carry_their_reason_as_an_attribute_cut_to_256_sqs_safe_characters(fake_aws):
    fake = fake_aws()
    reason = "\x00" + "r" * 300
    assert SqsDeadLetters("queue").send([letter(b"{}", reason)]) == []
    ((entry,),) = fake.batches
    assert entry["MessageAttributes"] == {"reason": {"DataType": "String",
                                                     "StringValue": "\\u0000" + "r" * 250}}
    message = json.loads(entry["MessageBody"])
    assert message["reason"] == reason and isinstance(message["rejected_at"], float)


def test_without_a_bucket_a_big_letter_is_sent_truncated(fake_aws):
    fake = fake_aws()
    assert SqsDeadLetters("queue").send([letter(b"\xff" * 300_000)]) == []
    ((entry,),) = fake.batches
    assert json.loads(entry["MessageBody"])["truncated"] is True


def test_a_letter_the_bucket_refuses_is_returned_to_be_retried_and_the_others_are_sent(fake_aws):
    def refuse(Bucket, Key, Body):  # noqa: N803
        raise RuntimeError("injected: the bucket refused")

    fake = fake_aws(put_object=refuse)
    big, small = letter(b"\xff" * 300_000), letter(b"{}")
    assert SqsDeadLetters("queue", bucket="bucket").send([big, small]) == [big]
    assert [[json.loads(entry["MessageBody"])["data_bytes"] for entry in batch] for batch in fake.batches] == [[2]]


def test_a_batch_sqs_refuses_fails_its_letters_and_the_next_batches_are_still_sent(fake_aws):
    def refuse_the_first(entries):
        if not fake.batches[1:]:
            raise RuntimeError("injected: SQS unavailable")
        return {"Successful": [{"Id": entry["Id"]} for entry in entries]}  # no "Failed" key at all

    fake = fake_aws(answer=refuse_the_first)
    letters = [letter(json.dumps({"n": n}).encode()) for n in range(12)]
    assert SqsDeadLetters("queue").send(letters) == letters[:10]
    assert [len(batch) for batch in fake.batches] == [10, 2]


class FakeStream:
    """kinesis.put_records that refuses each record (by its Data) as many times as `refusals` says."""

    def __init__(self, refusals: dict[bytes, int] | None = None):
        self.refusals = dict(refusals or {})
        self.calls: list[list[bytes]] = []

    def put_records(self, StreamName, Records):  # noqa: N803
        assert StreamName == "stream"
        self.calls.append([record["Data"] for record in Records])
        results = []
        for record in Records:
            if self.refusals.get(record["Data"], 0) > 0:
                self.refusals[record["Data"]] -= 1
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"})
            else:
                results.append({"SequenceNumber": "1", "ShardId": SHARD})
        return {"FailedRecordCount": sum("ErrorCode" in result for result in results), "Records": results}


def entries(count: int) -> list[dict]:
    return [{"PartitionKey": "u1", "Data": str(n).encode()} for n in range(count)]


@pytest.fixture
def sleeps(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(dead_letters.time, "sleep", slept.append)
    return slept


def test_put_all_puts_500_records_a_call(sleeps):
    stream = FakeStream()
    assert _put_all(stream, "stream", entries(1001)) == 0
    assert [len(call) for call in stream.calls] == [500, 500, 1]
    assert sleeps == []


def test_put_all_re_puts_only_what_the_stream_refused_backing_off(sleeps):
    stream = FakeStream({b"1": 2, b"3": 1})
    assert _put_all(stream, "stream", entries(5)) == 0
    assert stream.calls == [[b"0", b"1", b"2", b"3", b"4"], [b"1", b"3"], [b"1"]]
    assert sleeps == [0.05, 0.1]


def test_put_all_gives_up_after_four_attempts_and_counts_the_refused_records_of_every_call(sleeps):
    stream = FakeStream({b"1": 99, b"600": 99, b"601": 99})
    assert _put_all(stream, "stream", entries(700)) == 3
    assert [len(call) for call in stream.calls] == [500, 1, 1, 1, 200, 2, 2, 2]
    assert sleeps == [0.05, 0.1, 0.2, 0.4] * 2


def test_put_all_refuses_an_answer_that_does_not_match_the_records_put(sleeps):
    """Kinesis answers one result per record, in order: any other answer must not pass as all accepted."""
    short = SimpleNamespace(put_records=lambda StreamName, Records: {"Records": []})  # noqa: N803
    with pytest.raises(ValueError, match="zip"):
        _put_all(short, "stream", entries(2))
