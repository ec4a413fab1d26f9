"""Integration tests: moto's server speaks the real AWS APIs over HTTP; resources come from template.yaml."""

import json
import urllib.request
from pathlib import Path

import pytest

from pulse import aws
from pulse.local.functions import LambdaContext, function_environment, load_handler
from pulse.local.stack import LocalStack
from pulse.local.template import provision
from pulse.runtime import ingest_pipeline
from pulse.settings import settings
from pulse.store import user_interest_model

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(scope="session")
def moto_stack():
    stack = LocalStack(port=0).start()
    yield stack
    stack.stop()


@pytest.fixture
def stack(moto_stack):
    """A clean account for every test: moto reset, the template's resources created again."""
    request = urllib.request.Request(f"{moto_stack.endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    moto_stack.resources = provision(moto_stack.template, moto_stack.session())
    for cache in (settings, ingest_pipeline, aws.client, user_interest_model):
        cache.cache_clear()
    yield moto_stack
    for cache in (settings, ingest_pipeline):
        cache.cache_clear()


@pytest.fixture
def ingest(stack):
    """The real ingest handler, in the environment template.yaml gives it."""
    function = stack.function("IngestFunction")
    with function_environment(function, {"POWERTOOLS_METRICS_DISABLED": "true"}):
        handler = load_handler(function)
        yield lambda event: handler(event, LambdaContext("IngestFunction"))


def sample_event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def dead_letters(stack) -> list[dict]:
    sqs = stack.client("sqs")
    queue = stack.name_of("AWS::SQS::Queue")
    messages = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return messages
        messages.extend(json.loads(message["Body"]) for message in batch)
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def table_items(stack) -> dict[str, dict]:
    dynamodb = stack.client("dynamodb")
    items = dynamodb.scan(TableName=stack.name_of("AWS::DynamoDB::Table"), ConsistentRead=True)["Items"]
    return {item["user_id"]["S"]: item for item in items}
