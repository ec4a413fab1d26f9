"""The embedded local stack: resources from template.yaml, and the poller playing Lambda's event source mapping."""

import json

from pulse.local.poller import MappingSettings, StreamPoller
from pulse.local.template import PROVISIONED, data_resources
from tests.builders import behaviour
from tests.integration.conftest import dead_letters, table_items


def test_every_data_resource_of_the_template_exists_locally(stack):
    declared = data_resources(stack.template)
    assert set(declared) == set(stack.resources)
    assert {spec["Type"] for spec in declared.values()} <= PROVISIONED
    table = stack.client("dynamodb").describe_table(TableName=stack.name_of("AWS::DynamoDB::Table"))["Table"]
    assert table["KeySchema"] == [{"AttributeName": "user_id", "KeyType": "HASH"}]
    ttl = stack.client("dynamodb").describe_time_to_live(TableName=stack.name_of("AWS::DynamoDB::Table"))
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


def test_the_mapping_settings_come_from_the_template(stack):
    (poller,) = stack.stream_pollers()
    assert poller.settings == MappingSettings(batch_size=100, batching_window_seconds=1.0, bisect_on_error=True,
                                              max_retries=5, max_record_age_seconds=21600,
                                              report_batch_item_failures=True)


def put(stack, payloads):
    kinesis = stack.client("kinesis")
    kinesis.put_records(StreamName=stack.name_of("AWS::Kinesis::Stream"), Records=[
        {"PartitionKey": p["user_id"] if isinstance(p, dict) else "x",
         "Data": json.dumps(p).encode() if isinstance(p, dict) else p} for p in payloads])


def test_events_put_to_kinesis_reach_dynamodb_through_the_real_handler(stack):
    payloads = [behaviour(f"e{i}", f"user-{i % 7}", type="view", ts=1_700_000_000 + i, text=f"title number {i}")
                for i in range(140)]
    put(stack, payloads + [b"garbage"] + payloads[:10])  # a poison record and producer retries
    (poller,) = stack.stream_pollers()
    assert poller.drain() == 151
    items = table_items(stack)
    assert sum(int(item["event_count"]["N"]) for item in items.values()) == 140
    assert [letter["reason"] for letter in dead_letters(stack)] == [
        "record data is not valid JSON: Expecting value at line 1 column 1"]
    assert poller.stats.invocations == 2  # batch size 100


def scripted_poller(stack, handler, **settings):
    kinesis = stack.client("kinesis")
    sent = []
    poller = StreamPoller(kinesis, stack.name_of("AWS::Kinesis::Stream"), handler,
                          context=stack_context(), settings=MappingSettings(**settings), on_failure=sent.append)
    return poller, sent


def stack_context():
    from pulse.local.functions import LambdaContext

    return LambdaContext("scripted")


def test_partial_failures_retry_from_the_lowest_failed_record(stack):
    put(stack, [behaviour(f"e{i}", "u", text="t") for i in range(5)])
    seen: list[list[str]] = []

    def handler(event, context):
        numbers = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        seen.append(numbers)
        return {"batchItemFailures": [{"itemIdentifier": numbers[2]}] if len(seen) == 1 else []}

    poller, sent = scripted_poller(stack, handler, batch_size=10, report_batch_item_failures=True)
    poller.drain()
    assert seen[1] == seen[0][2:]
    assert sent == []


def test_exhausted_retries_send_only_the_coordinates_to_the_failure_destination(stack):
    put(stack, [behaviour(f"e{i}", "u", text="t") for i in range(4)])

    def handler(event, context):
        raise RuntimeError("injected: function keeps failing")

    poller, sent = scripted_poller(stack, handler, batch_size=10, max_retries=2, bisect_on_error=False)
    poller.drain()
    assert poller.stats.invocations == 3  # first attempt and two retries
    (message,) = sent
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["KinesisBatchInfo"]["batchSize"] == 4
    assert "Records" not in json.dumps(message)


def test_function_errors_bisect_the_batch(stack):
    put(stack, [behaviour(f"e{i}", "u", text="t") for i in range(4)])
    sizes = []

    def handler(event, context):
        sizes.append(len(event["Records"]))
        if len(event["Records"]) > 1:
            raise RuntimeError("injected: batch too big")

    poller, sent = scripted_poller(stack, handler, batch_size=10, max_retries=3, bisect_on_error=True)
    poller.drain()
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    assert sent == []
