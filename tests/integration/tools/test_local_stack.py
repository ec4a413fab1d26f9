"""The embedded local stack: resources from template.yaml, and the poller playing Lambda's event source mapping."""

import json

import yaml

from pulse_dev.local.poller import MappingSettings, StreamPoller
from tests.builders import behaviour
from tests.integration.conftest import dead_letters, table_items
from tests.paths import REPO_ROOT


def declared_resources() -> dict[str, dict]:
    """template.yaml read on its own (intrinsic tags kept as plain values), not through the local stack's reader."""

    class Plain(yaml.SafeLoader):
        pass

    Plain.add_multi_constructor("!", lambda loader, suffix, node: {
        "!" + suffix: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None})
    resources = yaml.load((REPO_ROOT / "template.yaml").read_text(), Loader=Plain)["Resources"]
    return resources


def only(resources: dict[str, dict], kind: str) -> dict:
    """The properties of the template's one resource of that type."""
    (properties,) = [spec.get("Properties") or {} for spec in resources.values() if spec["Type"] == kind]
    return properties


def test_the_template_data_resources_exist_in_the_account_with_their_declared_properties(stack):
    declared = declared_resources()
    stream = only(declared, "AWS::Kinesis::Stream")
    (stream_name,) = stack.client("kinesis").list_streams()["StreamNames"]
    summary = stack.client("kinesis").describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 1  # the ShardCount parameter's default
    assert summary["RetentionPeriodHours"] == stream["RetentionPeriodHours"]
    assert (summary["EncryptionType"], summary["KeyId"]) == (stream["StreamEncryption"]["EncryptionType"],
                                                             stream["StreamEncryption"]["KeyId"])

    table = only(declared, "AWS::DynamoDB::Table")
    dynamodb = stack.client("dynamodb")
    (table_name,) = dynamodb.list_tables()["TableNames"]
    described = dynamodb.describe_table(TableName=table_name)["Table"]
    assert described["KeySchema"] == table["KeySchema"]
    assert described["AttributeDefinitions"] == table["AttributeDefinitions"]
    assert described["BillingModeSummary"]["BillingMode"] == table["BillingMode"]
    assert described["SSEDescription"]["Status"] == "ENABLED"
    ttl = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (table["TimeToLiveSpecification"]["AttributeName"],
                                                               "ENABLED")
    backups = dynamodb.describe_continuous_backups(TableName=table_name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    queue = only(declared, "AWS::SQS::Queue")
    sqs = stack.client("sqs")
    (queue_url,) = sqs.list_queues()["QueueUrls"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == str(queue["MessageRetentionPeriod"])
    assert attributes["MaximumMessageSize"] == str(queue["MaximumMessageSize"])
    assert attributes["SqsManagedSseEnabled"] == "true"

    bucket = only(declared, "AWS::S3::Bucket")
    s3 = stack.client("s3")
    (bucket_name,) = [entry["Name"] for entry in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_versioning(Bucket=bucket_name)["Status"] == bucket["VersioningConfiguration"]["Status"]
    assert s3.get_public_access_block(Bucket=bucket_name)["PublicAccessBlockConfiguration"] == \
        bucket["PublicAccessBlockConfiguration"]
    (rule,) = s3.get_bucket_encryption(Bucket=bucket_name)["ServerSideEncryptionConfiguration"]["Rules"]
    (declared_rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ApplyServerSideEncryptionByDefault"] == declared_rule["ServerSideEncryptionByDefault"]

    secret = only(declared, "AWS::SecretsManager::Secret")
    (listed,) = stack.client("secretsmanager").list_secrets()["SecretList"]
    value = stack.client("secretsmanager").get_secret_value(SecretId=listed["ARN"])["SecretString"]
    assert listed["Description"] == secret["Description"]
    assert len(value) == secret["GenerateSecretString"]["PasswordLength"] and value.isalnum()


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
    from pulse_dev.local.functions import LambdaContext

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


ALL_TYPES_ITEM = {
    "k": {"S": "user-1"}, "n": {"N": "-12.5e-3"}, "b": {"B": b"\x00\xffzip"}, "t": {"BOOL": True}, "z": {"NULL": True},
    "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x01\x02", b"\xfe"]},
    "m": {"M": {"inner": {"B": b"\x07"}, "list": {"L": [{"N": "3"}, {"S": "x"}, {"BS": [b"\x09"]}]}}},
}


def dynamodb_answers(client) -> list:
    """What PutItem (ALL_OLD), GetItem and BatchGetItem answer for an item with every attribute type."""
    client.create_table(TableName="roundtrip", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    client.put_item(TableName="roundtrip", Item=ALL_TYPES_ITEM)
    answers = [client.put_item(TableName="roundtrip", Item=ALL_TYPES_ITEM, ReturnValues="ALL_OLD",
                               ReturnConsumedCapacity="TOTAL"),
               client.get_item(TableName="roundtrip", Key={"k": {"S": "user-1"}}, ConsistentRead=True),
               client.get_item(TableName="roundtrip", Key={"k": {"S": "nobody"}}),
               client.batch_get_item(RequestItems={"roundtrip": {"Keys": [{"k": {"S": "user-1"}},
                                                                          {"k": {"S": "nobody"}}]}})]
    for answer in answers:
        answer.pop("ResponseMetadata")
    return answers


def test_the_local_dynamodb_answers_every_attribute_type_as_moto_itself_does(stack, monkeypatch):
    """The local server dumps DynamoDB's answers directly (pulse_dev.local.moto_process): the same answers as
    moto's own serializer gives in process, binary values, sets and nesting included."""
    import boto3
    from moto import mock_aws

    local = dynamodb_answers(stack.client("dynamodb"))
    assert local[1]["Item"] == ALL_TYPES_ITEM and local[0]["Attributes"] == ALL_TYPES_ITEM
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # in process: moto intercepts only AWS's own endpoints
    with mock_aws():
        reference = dynamodb_answers(boto3.client("dynamodb", region_name="us-east-1"))
    assert local == reference
