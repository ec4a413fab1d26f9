"""`pulse dlq replay` on moto: parked records (after a fix) and batches the event source mapping gave up on go
back on the stream as new records, and the real ingest applies each event exactly once."""

import json

from pulse.cli import main
from pulse.stream import lambda_record
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


def replay(stack, capsys) -> tuple[int, str, str]:
    code = main(["dlq", "replay", "--queue-url", stack.name_of("AWS::SQS::Queue"),
                 "--stream", stack.name_of("AWS::Kinesis::Stream")])
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
