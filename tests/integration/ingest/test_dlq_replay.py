"""`pulse dlq replay` on moto: parked records (after a fix) and batches the event source mapping gave up on go
back on the stream as new records, and the real ingest applies each event exactly once."""

import json
from unittest import mock

from pulse import aws
from pulse.events.dead_letters import DeadLetter
from pulse.events.stream import StreamRecord, lambda_record
from pulse_dev.cli import main
from tests.builders import behaviour
from tests.integration.conftest import dead_letters, table_items

TEXT = "Fargo (1996) Crime Drama Thriller"  # no catalogue here: the text stands for the item


def stream_records(stack) -> list[dict]:
    """Every record on the stream, oldest first (one shard)."""
    kinesis = stack.client("kinesis")
    stream = stack.name_of("AWS::Kinesis::Stream")
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return [{**record, "ShardId": shard}
            for record in kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]]


def as_lambda_event(stack, records) -> dict:
    """The records as the event source mapping hands them to the ingest function."""
    arn = stack.resources["EventStream"].arn
    return {"Records": [lambda_record(shard_id=record["ShardId"], sequence_number=record["SequenceNumber"],
                                      partition_key=record["PartitionKey"], data=record["Data"],
                                      arrival=record["ApproximateArrivalTimestamp"].timestamp(), stream_arn=arn,
                                      region=stack.region, role_arn="arn:aws:iam::123456789012:role/ingest")
                        for record in records]}


def put(stack, records) -> None:
    """PutRecords as a producer would: (partition key, data) pairs."""
    stack.client("kinesis").put_records(StreamName=stack.name_of("AWS::Kinesis::Stream"), Records=[
        {"PartitionKey": key, "Data": data.encode()} for key, data in records])


def event_count(stack, user_id) -> int:
    return int(table_items(stack)[user_id]["event_count"]["N"])


def replay(stack, capsys, *options) -> tuple[int, str, str]:
    code = main(["dlq", "replay", "--queue-url", stack.name_of("AWS::SQS::Queue"),
                 "--stream", stack.name_of("AWS::Kinesis::Stream"), *options])
    out, err = capsys.readouterr()
    return code, out, err


def test_parked_records_are_replayed_as_new_records_and_applied_once(stack, ingest, capsys):
    put(stack, [("session-8", json.dumps(behaviour("e1", "u1", item_id="100", text=TEXT))),
                ("session-9", json.dumps(behaviour("e2", "u1", item_id="100", text=TEXT))),
                ("u1", json.dumps(behaviour("e3", "u1", type="teleport", item_id="100", text=TEXT))),
                ("u1", json.dumps(behaviour("e4", "u1", item_id="100", text=TEXT)))])
    sent = stream_records(stack)
    assert ingest(as_lambda_event(stack, sent)) == {"batchItemFailures": []}
    assert event_count(stack, "u1") == 1

    code, out, err = replay(stack, capsys)
    assert code == 1  # the unknown type cannot be mended by a replay: it stays parked, with its reason
    assert "3 dead letters read: 2 records put back" in out and "(2 messages deleted), 1 kept" in out
    assert "still invalid: unknown type 'teleport'" in err
    put_back = stream_records(stack)[len(sent):]
    assert [(r["PartitionKey"], json.loads(r["Data"])["event_id"]) for r in put_back] == [("u1", "e1"), ("u1", "e2")]
    assert all(b"\n" not in r["Data"] for r in put_back)

    assert ingest(as_lambda_event(stack, put_back)) == {"batchItemFailures": []}
    assert event_count(stack, "u1") == 3
    assert ingest(as_lambda_event(stack, put_back)) == {"batchItemFailures": []}  # delivered again: no change
    assert event_count(stack, "u1") == 3
    assert dead_letters(stack) == []  # the kept message is invisible for the replay's visibility timeout


def test_a_batch_given_up_by_the_event_source_mapping_is_replayed_from_its_coordinates_exactly_once(
        stack, ingest, capsys):
    """Read back at their old sequence numbers, the records of a skipped batch looked redelivered once a later
    batch of the user had moved the watermark past them: dropped. Replayed as new records, each applies once."""
    put(stack, [("u2", json.dumps(behaviour(f"b{n}", "u2", item_id="100", text=TEXT, ts=1_700_000_000 + n)))
                for n in range(1, 5)])
    first, second, third, fourth = stream_records(stack)
    ingest(as_lambda_event(stack, [first]))  # applied; then the batch [first..third] failed for good
    ingest(as_lambda_event(stack, [fourth]))  # a later batch of the user moved the watermark
    ingest(as_lambda_event(stack, [first, second, third]))  # re-reading the coordinates: "redelivered"
    assert event_count(stack, "u2") == 2

    stack.client("sqs").send_message(QueueUrl=stack.name_of("AWS::SQS::Queue"), MessageBody=json.dumps({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 6},
        "version": "1.0", "timestamp": "2026-01-01T00:00:00.000Z",
        "KinesisBatchInfo": {"shardId": first["ShardId"], "startSequenceNumber": first["SequenceNumber"],
                             "endSequenceNumber": third["SequenceNumber"], "batchSize": 3,
                             "streamArn": stack.resources["EventStream"].arn}}))
    code, out, _ = replay(stack, capsys)
    assert code == 0 and "1 dead letters read: 3 records put back" in out
    put_back = stream_records(stack)[4:]
    assert [json.loads(r["Data"])["event_id"] for r in put_back] == ["b1", "b2", "b3"]
    ingest(as_lambda_event(stack, put_back))
    assert event_count(stack, "u2") == 4  # b2 and b3 applied; b1 was applied already (its event_id)
    assert dead_letters(stack) == []


# --- The replay's edges: letters parked in the bucket, letters it keeps, a stream that refuses records ----------

REJECTED_AT = 1_700_000_000.0  # 2023-11-14


def pulse_letter(payload, *, sequence=1, reason="unknown type", **fields) -> dict:
    """An ingest's dead letter (as SqsDeadLetters writes it) for a record of these bytes (or this event)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    record = StreamRecord(shard_id="shardId-000000000000", sequence_number=str(sequence), partition_key="session",
                          data=data, arrival_ts=REJECTED_AT - 10, event_source_arn="arn:aws:kinesis:stream")
    return {**DeadLetter(reason, record).message(REJECTED_AT, fields.pop("payload_location", None)), **fields}


def park(stack, *bodies) -> list[str]:
    """The bodies sent to the dead-letter queue, in order -> their message ids."""
    sqs = stack.client("sqs")
    return [sqs.send_message(QueueUrl=stack.name_of("AWS::SQS::Queue"), MessageBody=json.dumps(body))["MessageId"]
            for body in bodies]


def event_ids(records) -> list[str]:
    return [json.loads(record["Data"])["event_id"] for record in records]


def valid(event_id, user_id="u1", **fields) -> dict:
    return behaviour(event_id, user_id, item_id="100", text=TEXT, **fields)


def test_more_than_ten_letters_are_replayed_in_one_run(stack, capsys):
    """The replay asked SQS for 10 - (messages read so far) messages when no --max was given: with ten read, it
    asked for 0, which SQS refuses (InvalidParameterValue), and the replay crashed half-way."""
    park(stack, *[pulse_letter(valid(f"e{n}")) for n in range(23)])
    code, out, err = replay(stack, capsys)
    assert (code, err) == (0, "")
    assert "23 dead letters read: 23 records put back" in out and "(23 messages deleted), 0 kept" in out
    assert sorted(event_ids(stream_records(stack))) == sorted(f"e{n}" for n in range(23))


def test_max_bounds_the_messages_read_and_each_receive_asks_sqs_for_at_most_ten_without_waiting(stack, capsys):
    park(stack, *[pulse_letter(valid(f"e{n}")) for n in range(14)])
    sqs = aws.client("sqs")
    with mock.patch.object(sqs, "receive_message", wraps=sqs.receive_message) as receive:
        code, out, _ = replay(stack, capsys, "--max", "12")
    assert code == 0 and "12 dead letters read: 12 records put back" in out
    assert [call.kwargs for call in receive.call_args_list] == [
        {"QueueUrl": stack.name_of("AWS::SQS::Queue"), "WaitTimeSeconds": 0, "VisibilityTimeout": 300,
         "MaxNumberOfMessages": asked} for asked in (10, 2)]
    assert len(stream_records(stack)) == 12 and len(dead_letters(stack)) == 2


def test_a_letter_whose_payload_waits_in_the_bucket_is_replayed_from_it(stack, ingest, capsys):
    bucket = stack.name_of("AWS::S3::Bucket")
    key = "dead-letters/2023-11-14/shardId-000000000000-1.bin"
    data = json.dumps(valid("big", context="x" * 1000)).encode()
    stack.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    _, missing = park(stack, pulse_letter(data, payload_location=f"s3://{bucket}/{key}"),
                      pulse_letter(data, payload_location=f"s3://{bucket}/dead-letters/gone.bin"))
    code, out, err = replay(stack, capsys)
    assert code == 1 and "2 dead letters read: 1 records put back" in out and "(1 messages deleted), 1 kept" in out
    assert err == f"kept: message {missing}: its payload s3://{bucket}/dead-letters/gone.bin cannot be read " \
                  "(NoSuchKey)\n"
    (put_back,) = stream_records(stack)
    assert (put_back["PartitionKey"], json.loads(put_back["Data"])) == ("u1", json.loads(data))
    ingest(as_lambda_event(stack, [put_back]))
    assert event_count(stack, "u1") == 1


def test_letters_that_cannot_be_replayed_are_kept_each_with_its_reason_and_the_others_go_back(stack, capsys):
    """The replay checks the events again as the ingest would (time limits included) and keeps what it cannot
    put back; the messages after a kept one are still replayed."""
    ids = park(stack,
               {"Records": []},
               pulse_letter(b"\xff\xfe"),
               valid("ok-1"),  # an event alone is no Pulse dead letter
               pulse_letter(b"{" * 10),
               pulse_letter(b'{"event_id": "n", "user_id": "u1", "type": "rate", "item_id": "1", "value": NaN, '
                            b'"ts": 1700000000}'),
               {**pulse_letter(valid("cut")), "truncated": True, "payload": None},
               {key: value for key, value in pulse_letter(valid("bare")).items() if key != "data_base64"},
               pulse_letter(valid("ahead", ts=4_102_444_800)),  # 2100: beyond the clock skew allowed
               pulse_letter(valid("ok-2")))
    code, out, err = replay(stack, capsys)
    assert code == 1
    assert "9 dead letters read: 1 records put back" in out and "(1 messages deleted), 8 kept" in out
    problems = dict(line.removeprefix("kept: message ").split(": ", 1) for line in err.splitlines())
    assert {ids.index(message): problem for message, problem in problems.items()} == {
        0: "not a Pulse dead letter",
        1: "still invalid: the record is not UTF-8 JSON (UnicodeDecodeError)",
        2: "not a Pulse dead letter",
        3: "still invalid: the record is not UTF-8 JSON (JSONDecodeError)",
        4: "still invalid: NaN is not a JSON number",
        5: "its payload was truncated (too big for a message, and no bucket was configured)",
        6: "still invalid: the record is not UTF-8 JSON (JSONDecodeError)",
        7: problems[ids[7]]}
    assert problems[ids[7]].startswith("still invalid: ts 4102444800 is ") and "PULSE_MAX_CLOCK_SKEW" in err
    assert event_ids(stream_records(stack)) == ["ok-2"]


def test_a_letter_whose_records_the_stream_refuses_is_kept_for_a_later_replay(stack, capsys):
    """PutRecords may refuse some records (throughput): they are put again, and a letter with a record still
    refused after that stays in the queue; the letters after it are replayed."""
    kinesis = aws.client("kinesis")
    real_put = kinesis.put_records

    def refuse_u9(StreamName, Records):  # noqa: N803 - boto3's parameter names
        accepted = [record for record in Records if record["PartitionKey"] != "u9"]
        answer = real_put(StreamName=StreamName, Records=accepted) if accepted else {"Records": []}
        results = iter(answer["Records"])
        return {"Records": [{"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"}
                            if record["PartitionKey"] == "u9" else next(results) for record in Records]}

    other, refused, _ = park(stack, valid("e0"), pulse_letter(valid("e9", "u9")), pulse_letter(valid("e1")))
    with mock.patch.object(kinesis, "put_records", side_effect=refuse_u9) as put:
        code, out, err = replay(stack, capsys)
    assert len(put.call_args_list) == 5  # four attempts for the refused record, one for the other
    assert code == 1 and "3 dead letters read: 1 records put back" in out and "(1 messages deleted), 2 kept" in out
    assert err.splitlines() == [f"kept: message {other}: not a Pulse dead letter",
                                f"kept: message {refused}: the stream refused 1 record(s); kept for a later replay"]
    assert event_ids(stream_records(stack)) == ["e1"]


def batch_letter(stack, first, last, **info) -> dict:
    """The event source mapping's on-failure message for the records between these two (inclusive)."""
    return {"requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 6},
            "KinesisBatchInfo": {"shardId": first["ShardId"], "startSequenceNumber": first["SequenceNumber"],
                                 "endSequenceNumber": last["SequenceNumber"],
                                 "streamArn": stack.resources["EventStream"].arn, **info}}


def paged_get_records(kinesis, page: int):
    """GetRecords answering at most `page` records a call (Kinesis may answer fewer than asked)."""
    real = kinesis.get_records
    return mock.patch.object(kinesis, "get_records", side_effect=lambda ShardIterator, Limit=10_000: real(  # noqa: N803
        ShardIterator=ShardIterator, Limit=min(page, Limit)))


def test_a_batch_at_the_end_of_the_stream_is_read_page_by_page_and_only_its_valid_events_go_back(stack, capsys):
    put(stack, [("u1", json.dumps(valid("b1"))), ("u1", "not json"), ("u1", json.dumps(valid("b3", ts=4_102_444_800))),
                ("u1", json.dumps(valid("b4"))), ("u1", json.dumps(valid("b5")))])
    records = stream_records(stack)
    park(stack, batch_letter(stack, records[0], records[4], batchSize=5))
    kinesis = aws.client("kinesis")
    with paged_get_records(kinesis, 2) as get_records:
        code, out, _ = replay(stack, capsys)
    assert code == 0 and "1 dead letters read: 3 records put back" in out
    assert len(get_records.call_args_list) == 3  # it stops once it has the batch's 5 records
    assert event_ids(stream_records(stack)[5:]) == ["b1", "b4", "b5"]


def test_a_batch_without_its_size_is_read_up_to_its_last_sequence_number(stack, capsys):
    put(stack, [("u1", json.dumps(valid(f"b{n}"))) for n in range(1, 6)])
    records = stream_records(stack)
    park(stack, batch_letter(stack, records[0], records[2]), batch_letter(stack, records[3], records[4]))
    with paged_get_records(aws.client("kinesis"), 2):
        code, out, _ = replay(stack, capsys)
    assert code == 0 and "2 dead letters read: 5 records put back" in out
    assert event_ids(stream_records(stack)[5:]) == ["b1", "b2", "b3", "b4", "b5"]


def test_a_batch_the_stream_no_longer_holds_is_kept_with_the_reason(stack, capsys):
    put(stack, [("u1", json.dumps(valid("b1")))])
    (record,) = stream_records(stack)
    gone = {**record, "SequenceNumber": str(int(record["SequenceNumber"]) + 10**20)}
    ids = park(stack, batch_letter(stack, gone, gone, batchSize=1),
               batch_letter(stack, {**record, "ShardId": "shardId-000000000009"}, record, batchSize=1))
    code, out, err = replay(stack, capsys)
    assert code == 1 and "2 dead letters read: 0 records put back" in out
    assert err.splitlines() == [
        f"kept: message {ids[0]}: the batch's records are no longer on the stream",
        f"kept: message {ids[1]}: the batch's records cannot be read from the stream (ResourceNotFoundException)"]
