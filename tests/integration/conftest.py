"""Integration tests: moto's server speaks the real AWS APIs over HTTP; resources come from template.yaml."""

import json
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from pulse.wiring import reset_caches
from pulse_dev.local.functions import LambdaContext, function_environment, import_handler, load_handler
from pulse_dev.local.runtime import LocalRuntime
from pulse_dev.local.stack import LocalStack
from pulse_dev.local.template import provision
from tests.paths import REPO_ROOT

EVENTS = REPO_ROOT / "events"


@pytest.fixture(scope="session")
def moto_stack():
    """One moto server for the session; each test points the process at it through `stack` (and takes it back)."""
    stack = LocalStack(port=0).start()
    stack.restore_environment()
    yield stack
    stack.stop()


@pytest.fixture
def stack(moto_stack):
    """A clean account for every test: moto reset, the template's resources created again."""
    request = urllib.request.Request(f"{moto_stack.endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    moto_stack.activate()
    moto_stack.resources = provision(moto_stack.template, moto_stack.session())
    yield moto_stack
    moto_stack.restore_environment()  # the endpoint, and every function's variables if the test ran the pollers
    reset_caches()


@pytest.fixture
def ingest(stack):
    """The real ingest handler, in the environment template.yaml gives it."""
    with function_handler(stack, "IngestFunction") as handler:
        yield handler


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


def http_request(url, method="GET", data: bytes | None = None, headers: dict | None = None):
    """One request over real HTTP -> (status, JSON body), errors included."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def http_get(url):
    return http_request(url)


def wait_for(check, timeout=180.0):
    """Poll until check() returns something truthy (and return it). For what has no completion signal to wait on
    (a catalogue version served, an object written): the bound only ends a test that would hang, so it is
    generous for a loaded 2-core runner. Records put on the stream: LocalRuntime.wait_until_ingested()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout:.0f} s: {getattr(check, '__qualname__', check)}")


def table_items(stack) -> dict[str, dict]:
    dynamodb = stack.client("dynamodb")
    items = dynamodb.scan(TableName=stack.name_of("AWS::DynamoDB::Table"), ConsistentRead=True)["Items"]
    return {item["user_id"]["S"]: item for item in items}


class FailingWrites:
    """An interest store whose writes of one user fail (the others, and every read, go to the real store)."""

    def __init__(self, store, user_id, message="injected: DynamoDB unavailable"):
        self.store, self.user_id, self.message = store, user_id, message

    def __getattr__(self, name):
        return getattr(self.store, name)

    def update(self, user, mutate, **options):
        if self.user_id is None or user == self.user_id:
            raise RuntimeError(self.message)
        return self.store.update(user, mutate, **options)


class CrashingEncoder:
    """An encoder that fails every call."""

    def encode(self, texts, *args, **options):
        raise RuntimeError("injected: encoder crashed")


@contextmanager
def ingest_with(stack, *, metrics=False, **replacements):
    """The real ingest handler (functions/ingest/app.py's make_handler) around the container's pipeline with some
    of its parts replaced: how a test injects a fault. Each replacement is a function of the real pipeline, e.g.
    `store=lambda real: FailingWrites(real.store, "186")` or `load_embedder=lambda real: CrashingEncoder`."""
    from pulse.ingest.pipeline import IngestPipeline
    from pulse.wiring import ingest_pipeline

    with function_handler(stack, "IngestFunction", metrics=metrics, attribute="make_handler") as make_handler:
        real = ingest_pipeline()
        parts = {"store": real.store, "load_embedder": lambda: real.embedder, "catalog": real.catalog,
                 "dead_letters": real.dead_letters, "settings": real.settings}
        pipeline = IngestPipeline(**{**parts, **{name: replace(real) for name, replace in replacements.items()}})
        handler = make_handler(lambda: pipeline)
        yield lambda event: handler(event, LambdaContext("IngestFunction"))


@contextmanager
def function_handler(stack, logical_id, *, metrics=False, attribute=None):
    """The real handler of a template function, in its environment (catalogue checked on every call).
    `metrics`: Powertools prints each invocation's metrics to stdout, as on Lambda (see `emitted_metrics`).
    `attribute`: another name of the handler's module instead (its factory, `make_handler`), as it is."""
    from aws_lambda_powertools import Metrics

    function = stack.function(logical_id)
    with function_environment(function, {"POWERTOOLS_METRICS_DISABLED": "false" if metrics else "true",
                                         "PULSE_CATALOG_CHECK_SECONDS": "0"}):
        if metrics:
            Metrics().clear_metrics()  # values kept by earlier handlers that ran with metrics disabled
        if attribute is not None:
            yield import_handler(function.code_dir / f"{function.module.replace('.', '/')}.py", attribute,
                                 f"pulse_function_{logical_id}")
            return
        handler = load_handler(function)
        yield lambda event: handler(event, LambdaContext(logical_id))


def emitted_metrics(stdout: str) -> dict[str, tuple[list[float], str]]:
    """The metrics in the CloudWatch embedded-metric-format lines of `stdout`: {name: (values, unit)}; every
    line must be in the namespace the template gives the functions."""
    found: dict[str, tuple[list[float], str]] = {}
    for line in stdout.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "Pulse", directive
            for metric in directive["Metrics"]:
                values, _ = found.get(metric["Name"], ([], ""))
                found[metric["Name"]] = (values + document[metric["Name"]], metric["Unit"])
    return found


def api_caller(handler):
    """call(method, path, query, body) -> (status, json): the API handler called like API Gateway would."""
    from pulse_dev.local.http import response_body
    from tests.builders import http_event

    def call(method, path, query="", body=None):
        response = handler(http_event(method, path, query, body))
        raw = response_body(response)
        return response["statusCode"], json.loads(raw) if raw else None

    return call


@pytest.fixture
def api(stack):
    """Call the real API handler like API Gateway would: api("GET", "/health") -> (status, json)."""
    with function_handler(stack, "ApiFunction") as handler:
        yield api_caller(handler)


@contextmanager
def counted_api(stack, capsys):
    """The API handler with its Powertools metrics on: call("GET", "/health") -> (status, json, the metrics that
    call printed, as `emitted_metrics` reads them). Enter it after the other handlers' fixtures: their
    environments would switch its metrics off. It starts cold, its settings read from its own environment."""
    with function_handler(stack, "ApiFunction", metrics=True) as handler:
        reset_caches()
        call = api_caller(handler)

        def counted(method, path, query="", body=None):
            capsys.readouterr()  # what earlier calls printed
            status, answer = call(method, path, query, body)
            return status, answer, emitted_metrics(capsys.readouterr().out)

        yield counted


@pytest.fixture
def catalog_function(stack):
    with function_handler(stack, "CatalogFunction") as handler:
        yield handler


def upload_catalog(stack, catalog_function, lines, key="incoming/catalog.jsonl"):
    """Put a JSON Lines catalogue under incoming/ and deliver the S3 notification to the catalogue function."""
    bucket = stack.name_of("AWS::S3::Bucket")
    stack.client("s3").put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode())
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}
    return catalog_function(event)


@pytest.fixture
def dynamodb_requests():
    """The DynamoDB requests PynamoDB sends while the test runs: [(operation, parameters)]."""
    from unittest import mock

    from pynamodb.connection.base import Connection

    sent: list[tuple[str, dict]] = []
    real = Connection.dispatch

    def record(connection, operation, parameters):
        sent.append((operation, parameters))
        return real(connection, operation, parameters)

    with mock.patch.object(Connection, "dispatch", record):
        yield sent


@contextmanager
def running_runtime(**options):
    """A whole local runtime (moto, the functions, the API over HTTP) on free ports, stopped afterwards: what a
    module of tests shares, each test then entering `runtime.stack.activated()`."""
    running = LocalRuntime(aws_port=0, api_port=0, **options).start()
    try:
        yield running
    finally:
        running.stop()
