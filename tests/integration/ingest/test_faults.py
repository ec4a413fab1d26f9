"""Fault injection on the real handlers over moto: DynamoDB throttling and write conflicts, a crash in the middle
of a batch, S3 unreachable at the API's cold start, Kinesis throttling behind POST /events. Nothing is lost,
nothing is applied twice, and every failure is either retried or reported."""

import base64
import json
from collections import Counter
from unittest import mock

import botocore.exceptions
import pytest
from pynamodb.exceptions import PutError

from pulse import aws
from pulse.catalog.store import S3CatalogRepository
from pulse.catalog.version import EmptyCatalog
from pulse.events.dead_letters import InMemoryDeadLetters
from pulse.events.stream import StreamRecord
from pulse.ingest.pipeline import IngestPipeline
from pulse.interest.store import DynamoInterestStore
from pulse.settings import IngestSettings, load_settings
from pulse.wiring import ingest_pipeline
from tests.builders import behaviour, kinesis_record
from tests.integration.conftest import FailingWrites, ingest_with, sample_event, table_items, upload_catalog
from tests.integration.ingest.test_ingest_handler import assert_state
from tests.scenarios import catalog_lines, valid_batch

USERS = ("196", "186", "22")


def throttled(code: str = "ProvisionedThroughputExceededException") -> PutError:
    cause = botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "injected"}}, "PutItem")
    return PutError("injected", cause=cause)


def payloads_of(user):
    return [payload for payload in valid_batch() if payload["user_id"] == user]


def without_clocks(items):
    """The items minus the wall-clock attributes a later write refreshes."""
    return {user: {key: value for key, value in item.items() if key not in ("updated_at", "expires_at")}
            for user, item in items.items()}


@pytest.fixture
def store_saves():
    """Wraps the interest model's save: `failures[user] = n` makes that user's next n writes fail."""
    store = ingest_pipeline().store
    real_save = store.model.save
    failures: Counter = Counter()
    attempts: Counter = Counter()
    hooks = {}

    def save(item, *args, **kwargs):
        attempts[item.user_id] += 1
        if item.user_id in hooks:
            hooks.pop(item.user_id)()
        if failures[item.user_id] > 0:
            failures[item.user_id] -= 1
            raise throttled()
        return real_save(item, *args, **kwargs)

    with mock.patch.object(store.model, "save", save), mock.patch("pulse.interest.store._backoff"):
        yield store, failures, attempts, hooks


def test_dynamodb_throttling_is_retried_with_backoff_and_applied_once(stack, ingest, encoder, store_saves):
    store, failures, attempts, _ = store_saves
    for user in USERS:
        failures[user] = 3  # below the store's attempts (6)
    assert ingest(sample_event("ingest-valid-batch")) == {"batchItemFailures": []}
    items = table_items(stack)
    for user in USERS:
        assert attempts[user] == 4
        assert int(items[user]["event_count"]["N"]) == len(payloads_of(user))
        assert int(items[user]["version"]["N"]) == 1  # written once
        assert_state(items[user], encoder, payloads_of(user))
    assert store.conflicts >= 9


def test_throttling_that_outlasts_the_retries_fails_only_that_users_records_until_redelivered(
        stack, ingest, encoder, store_saves):
    store, failures, attempts, _ = store_saves
    event = sample_event("ingest-valid-batch")
    failures["186"] = store.attempts  # every attempt of this batch
    response = ingest(event)
    failed = [failure["itemIdentifier"] for failure in response["batchItemFailures"]]
    sequence_of = {json.loads(base64.b64decode(r["kinesis"]["data"]))["event_id"]:
                   r["kinesis"]["sequenceNumber"] for r in event["Records"]}
    assert failed == [sequence_of["vb-4"], sequence_of["vb-5"]]  # 186's records, reported for retry
    assert attempts["186"] == store.attempts and "186" not in table_items(stack)

    before = table_items(stack)
    assert ingest(event) == {"batchItemFailures": []}  # Lambda redelivers; DynamoDB answers again
    after = table_items(stack)
    assert without_clocks({u: after[u] for u in ("196", "22")}) == without_clocks(before)  # not applied twice
    assert int(after["186"]["event_count"]["N"]) == 2
    assert_state(after["186"], encoder, payloads_of("186"))


def test_a_concurrent_writer_is_a_conditional_check_conflict_retried_on_fresh_state(
        stack, ingest, encoder, store_saves):
    store, _, attempts, hooks = store_saves
    other_writer = IngestPipeline(store=DynamoInterestStore(stack.name_of("AWS::DynamoDB::Table"), ttl_days=30),
                                  load_embedder=lambda: encoder, catalog=EmptyCatalog(),
                                  dead_letters=InMemoryDeadLetters(), settings=load_settings(IngestSettings))
    # The same user's event from another shard (after a reshard), written between our read and our write.
    concurrent = behaviour("other-1", "22", type="search", ts=1_700_000_050, text="a concurrent search")
    hooks["22"] = lambda: other_writer.process(
        [StreamRecord.from_lambda(kinesis_record(concurrent, 900, shard="shardId-000000000001"))])

    assert ingest(sample_event("ingest-valid-batch")) == {"batchItemFailures": []}
    item = table_items(stack)["22"]
    assert store.conflicts == 1 and attempts["22"] == 3  # the other writer's save, ours refused, ours again
    assert int(item["event_count"]["N"]) == len(payloads_of("22")) + 1
    assert_state(item, encoder, [*payloads_of("22"), concurrent])


def test_a_crash_in_the_middle_of_a_batch_then_full_redelivery_equals_a_clean_run(stack, ingest, encoder):
    event = sample_event("ingest-valid-batch")
    crashed = "injected: the function crashed here"
    with ingest_with(stack, store=lambda real: FailingWrites(real.store, "186", crashed)) as crashing:
        assert crashing(event)["batchItemFailures"]
    assert set(table_items(stack)) == {"196", "22"}  # some users were written before the crash
    assert ingest(event) == {"batchItemFailures": []}  # the whole batch again (a retry after a timeout)
    recovered = without_clocks(table_items(stack))

    dynamodb = stack.client("dynamodb")
    for user in USERS:
        dynamodb.delete_item(TableName=stack.name_of("AWS::DynamoDB::Table"), Key={"user_id": {"S": user}})
    assert ingest(event) == {"batchItemFailures": []}
    assert recovered == without_clocks(table_items(stack))


def test_s3_unreachable_at_cold_start_answers_503_then_recovers_by_itself(stack, api, catalog_function):
    outage = botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3.amazonaws.com")
    with mock.patch.object(S3CatalogRepository, "current_version", side_effect=outage):
        status, answer = api("GET", "/users/u/recommendations")
        assert status == 503 and answer["error"].startswith("the catalogue store cannot be reached")
        assert api("GET", "/health")[1]["status"] == "degraded"
    status, _ = api("GET", "/users/u/recommendations")
    assert status == 503  # S3 is back but nothing is published yet: still a clear 503
    upload_catalog(stack, catalog_function, catalog_lines())
    status, answer = api("GET", "/users/u/recommendations")
    assert status == 200 and answer["strategy"] == "popular"

    with mock.patch.object(S3CatalogRepository, "current_version", side_effect=outage):
        status, answer = api("GET", "/users/u/recommendations")  # S3 gone again: the loaded version serves
        assert status == 200 and len(answer["items"]) == 10


class ThrottlingKinesis:
    """The real client, but PutRecords refuses chosen partition keys `refusals[key]` more times."""

    def __init__(self, real, refusals):
        self.real, self.refusals, self.calls = real, refusals, 0

    def put_records(self, StreamName, Records):  # noqa: N803 - boto3's names
        self.calls += 1
        passed, results = [], []
        for record in Records:
            if self.refusals.get(record["PartitionKey"], 0) > 0:
                self.refusals[record["PartitionKey"]] -= 1
                results.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard"})
            else:
                passed.append(record)
                results.append(None)
        stored = iter(self.real.put_records(StreamName=StreamName, Records=passed)["Records"] if passed else [])
        return {"FailedRecordCount": sum(result is not None for result in results),
                "Records": [result or next(stored) for result in results]}


def stream_event_ids(stack):
    kinesis = stack.client("kinesis")
    stream = stack.name_of("AWS::Kinesis::Stream")
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return [json.loads(record["Data"])["event_id"]
            for record in kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]]


def test_kinesis_throttling_on_post_events_is_retried_and_what_still_fails_is_reported_per_event(stack, api):
    events = [behaviour(f"k{n}", f"user-{n % 3}", item_id="m1", ts=1_700_000_000 + n) for n in range(6)]
    throttling = ThrottlingKinesis(aws.client("kinesis"), {"user-0": 2, "user-1": 100})
    with mock.patch("pulse.serving.service.aws.client", return_value=throttling), \
            mock.patch("pulse.serving.service.time.sleep"):
        status, answer = api("POST", "/events", body={"events": events})
    assert status == 202
    assert answer["accepted"] == 4  # user-0's were refused twice, then stored; user-2's at once
    assert answer["rejected"] == [
        {"index": index, "error": "not stored, retry later: ProvisionedThroughputExceededException"}
        for index in (1, 4)]  # user-1's, refused through every attempt: reported, not dropped silently
    assert throttling.calls == 4
    assert sorted(stream_event_ids(stack)) == ["k0", "k2", "k3", "k5"]  # each stored exactly once
