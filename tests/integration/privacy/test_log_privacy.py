"""The log-reference key is a per-deployment secret (created by the template, here in moto's Secrets Manager), read
once per container, with no constant to fall back on; and no log line at INFO or above holds a raw user id, on
any path the ingest and the API take with valid and invalid input."""

import hashlib
import hmac
import io
import json
import logging
from unittest import mock

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from pulse import aws
from pulse.privacy import LogKeyUnavailableError, user_ref
from pulse_dev.local.template import provision
from tests.builders import behaviour, kinesis_event, kinesis_record
from tests.integration.conftest import FailingWrites, dead_letters, function_handler, ingest_with, upload_catalog
from tests.scenarios import catalog_items, catalog_lines

PERSON = "alice.smith@example.com"
# Every raw id the runs below use: valid ones, and ones refused for spaces, control or format characters.
VALID_IDS = [PERSON, "bob.o'neil@example.org", "carol+pulse@example.net"]
INVALID_IDS = [f"{PERSON} ", " dave.jones@example.com", "erin\u200b@example.com", "frank\u202e@example.com",
               "grace\x07@example.com"]
SOURCE_CONSTANT = "pulse-log-reference"  # the key the source used to hold (anyone could enumerate with it)


def secret_arn(stack):
    (arn,) = [r.name for r in stack.resources.values() if r.type == "AWS::SecretsManager::Secret"]
    return arn


def raw_forms(user_id):
    """The id as it could appear in a log line: as is, JSON-escaped, or as Python's repr."""
    return {user_id.strip(), json.dumps(user_id)[1:-1].strip(), repr(user_id)[1:-1].strip()}


class LogCapture(logging.Handler):
    """Every record at INFO or above reaching the root logger or the functions' Powertools logger, rendered
    with its message, its extra fields and its exception."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        fields = {key: value for key, value in vars(record).items() if key not in ("msg", "args", "exc_info")}
        self.lines.append(f"{record.levelname} {record.getMessage()} {fields!r} "
                          f"{logging.Formatter().formatException(record.exc_info) if record.exc_info else ''}")


@pytest.fixture
def captured(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    capture, stream = LogCapture(), io.StringIO()
    loggers = [logging.getLogger(), logging.getLogger("pulse")]
    level = loggers[1].level
    loggers[1].setLevel(logging.INFO)  # as deployed (LogLevel INFO), whatever an earlier test left
    for logger in loggers:
        logger.addHandler(capture)
    json_handlers = [h for h in logging.getLogger("pulse").handlers if isinstance(h, logging.StreamHandler)
                     and h is not capture]
    previous = [handler.setStream(stream) for handler in json_handlers]
    yield capture, stream
    for logger in loggers:
        logger.removeHandler(capture)
    for handler, old in zip(json_handlers, previous, strict=True):
        handler.setStream(old)
    loggers[1].setLevel(level)


def leaks(captured):
    capture, stream = captured
    lines = capture.lines + [line for line in stream.getvalue().splitlines() if '"level":"DEBUG"' not in line]
    return [(user_id, line[:300]) for line in lines for user_id in VALID_IDS + INVALID_IDS
            for form in raw_forms(user_id) if form in line]


def test_no_raw_user_id_in_any_log_line_of_the_ingest_and_the_api(stack, ingest, api, catalog_function, captured):
    upload_catalog(stack, catalog_function, catalog_lines())
    items = [item["item_id"] for item in catalog_items()[:4]]
    valid = [behaviour(f"v{n}-{i}", user, item_id=items[i], ts=1_700_000_000 + i)
             for n, user in enumerate(VALID_IDS) for i in range(2)]
    invalid = [kinesis_record(behaviour(f"x{n}", user, item_id=items[0]), 50 + n)
               for n, user in enumerate(INVALID_IDS)]
    invalid.append(kinesis_record(json.dumps({"user_id": PERSON, "type": "view"})[:-3], 60, partition_key=PERSON))
    invalid.append(kinesis_record(behaviour("pk", PERSON, item_id=items[0]), 61, partition_key="someone-else"))
    invalid.append(kinesis_record(behaviour("future", VALID_IDS[1], item_id=items[0], ts=4e10), 62))
    assert ingest({"Records": kinesis_event(valid)["Records"] + invalid})["batchItemFailures"] == []
    assert len(dead_letters(stack)) >= len(INVALID_IDS)
    with ingest_with(stack, store=lambda real: FailingWrites(real.store, None, "injected: write failed")) as failing, \
            pytest.raises(BatchProcessingError):
        failing(kinesis_event([behaviour("w1", PERSON, type="search", text="space opera")], first_sequence=70))

    for user in VALID_IDS:
        assert api("GET", f"/users/{user}/recommendations")[0] == 200
        assert api("GET", f"/users/{user}/profile")[0] == 200
    for user in INVALID_IDS:
        assert api("GET", f"/users/{user}/profile")[0] < 500
    status, answer = api("POST", "/events", body={"events": [
        behaviour("p1", VALID_IDS[2], item_id=items[1], ts=1_700_000_100),
        *(behaviour(f"p{n}", user, item_id=items[1]) for n, user in enumerate(INVALID_IDS, start=2))]})
    assert status == 202 and answer["accepted"] == 1 and len(answer["rejected"]) == len(INVALID_IDS)
    assert api("GET", f"/items/{items[0]}/similar")[0] == 200
    for user in VALID_IDS:
        assert api("DELETE", f"/users/{user}")[0] == 200
    assert api("DELETE", f"/users/{INVALID_IDS[1]}")[0] < 500

    capture, stream = captured
    assert '"level":"WARNING"' in stream.getvalue() and '"message":"batch applied"' in stream.getvalue()
    assert leaks(captured) == []


def test_the_key_is_a_secret_generated_per_deployment_and_read_once(stack, ingest, captured):
    arn = secret_arn(stack)
    value = stack.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    assert len(value) == 64 and value.isalnum()
    assert stack.function("IngestFunction").environment["PULSE_LOG_KEY_SECRET"] == arn
    assert stack.function("ApiFunction").environment["PULSE_LOG_KEY_SECRET"] == arn

    real_client = aws.client
    calls = []

    def counting(service):
        if service == "secretsmanager":
            calls.append(service)
        return real_client(service)

    with mock.patch.object(aws, "client", side_effect=counting), \
            ingest_with(stack, store=lambda real: FailingWrites(real.store, None, "injected")) as failing:
        for first in (1, 10, 20):  # three invocations of one container, each logging a user's reference
            with pytest.raises(BatchProcessingError):
                failing(kinesis_event([behaviour(f"k{first}", PERSON, type="search", text="x")], first_sequence=first))
    assert len(calls) <= 1  # read at most once (at the first invocation), never per log line
    logged = {line.split("'user': '")[1][:18] for line in captured[0].lines if "'user': 'u:" in line}
    expected = "u:" + hmac.new(value.encode(), PERSON.encode(), hashlib.sha256).hexdigest()[:16]
    assert logged == {expected}

    # Enumeration with what the source holds finds nothing: the key is not in the source.
    candidates = [f"{name}.smith@example.com" for name in ("bob", "carol", "alice", "dave")]
    for key in (SOURCE_CONSTANT, "", "pulse"):
        guesses = {"u:" + hmac.new(key.encode(), c.encode(), hashlib.sha256).hexdigest()[:16] for c in candidates}
        assert not guesses & logged

    stack.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    stack.resources = provision(stack.template, stack.session())  # another deployment
    with function_handler(stack, "IngestFunction"):
        assert secret_arn(stack) != arn and user_ref(PERSON) != expected  # another key


def test_a_configured_but_unreadable_secret_fails_the_first_invocation_clearly(stack, captured):
    arn = secret_arn(stack)
    stack.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    with function_handler(stack, "IngestFunction") as ingest, pytest.raises(LogKeyUnavailableError) as failure:
        ingest(kinesis_event([behaviour("a", PERSON, type="search", text="x")]))
    assert f"cannot be read from Secrets Manager (PULSE_LOG_KEY_SECRET={arn})" in str(failure.value)
    assert "ResourceNotFoundException" in str(failure.value)

    from pulse.wiring import reset_caches
    from pulse_dev.local.http import response_body
    from tests.builders import http_event

    reset_caches()
    with function_handler(stack, "ApiFunction") as api:
        response = api(http_event("GET", f"/users/{PERSON}/profile"))
    assert response["statusCode"] == 500 and b"Secrets Manager" not in response_body(response)
    assert any("cannot be read from Secrets Manager" in line for line in captured[0].lines)
    assert leaks(captured) == []
