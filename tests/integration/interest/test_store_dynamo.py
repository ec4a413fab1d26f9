"""DynamoInterestStore against the template's table on moto: reads are strongly consistent (what the optimistic
lock needs), a user already read is not read again, missing users are simply absent, and conflicts are retried
the documented number of times."""

from unittest import mock

import pytest

from pulse.interest.store import DynamoInterestStore, WriteConflictError
from tests.unit.interest.test_store import Changed, add_engagement


@pytest.fixture
def dynamo(stack):
    return DynamoInterestStore(stack.name_of("AWS::DynamoDB::Table"), ttl_days=30)


@pytest.fixture
def requests(dynamodb_requests):
    return dynamodb_requests


def test_get_and_get_many_ask_for_strongly_consistent_reads(dynamo, requests):
    dynamo.update("u1", add_engagement)
    requests.clear()
    assert dynamo.get("u1").event_count == 1
    assert set(dynamo.get_many(["u1", "missing"])) == {"u1"}
    reads = [(operation, parameters) for operation, parameters in requests if operation in ("GetItem", "BatchGetItem")]
    assert [operation for operation, _ in reads] == ["GetItem", "BatchGetItem"]
    assert reads[0][1]["ConsistentRead"] is True
    assert all(keys["ConsistentRead"] is True for keys in reads[1][1]["RequestItems"].values())


def test_an_update_given_the_user_just_read_writes_without_reading_again_or_conflicting(dynamo, requests):
    dynamo.update("u1", add_engagement)
    known = dynamo.get("u1")
    requests.clear()
    dynamo.update("u1", add_engagement, known=known)
    assert [operation for operation, _ in requests] == ["PutItem"] and dynamo.conflicts == 0
    assert dynamo.get("u1").event_count == 2


def test_an_update_of_an_existing_user_reads_it_first_and_writes_once(dynamo):
    dynamo.update("u1", add_engagement)
    dynamo.update("u1", add_engagement)
    stored = dynamo.get("u1")
    assert dynamo.conflicts == 0 and stored.event_count == 2 and stored.version == 2
    assert [entry.item_id for entry in stored.history] == ["item-0", "item-1"]


def test_the_dynamodb_store_tries_six_times_by_default_like_the_write_attempts_setting(dynamo):
    calls = []
    with mock.patch.object(dynamo, "_write", return_value=False), pytest.raises(WriteConflictError):
        dynamo.update("u1", lambda user: calls.append(user) or Changed())
    assert len(calls) == 6
