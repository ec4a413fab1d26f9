"""Personal data: user ids never reach the logs in clear text at INFO (a keyed hash does), and
DELETE /users/{user_id} forgets everything Pulse keeps about a user."""

import datetime as dt
import gzip
import io
import json
import logging
from contextlib import contextmanager
from unittest import mock

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from pulse.archive import read_archive
from pulse.cli import main
from pulse.privacy import user_ref
from pulse.runtime import ingest_pipeline
from tests.builders import behaviour, kinesis_event
from tests.integration.conftest import table_items

PERSON = "alice.smith@example.com"


@contextmanager
def lambda_log_lines():
    """What the functions' Powertools loggers write (their JSON lines, as CloudWatch would receive them)."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger("pulse").handlers if isinstance(h, logging.StreamHandler)]
    assert handlers, "the Powertools logger is not set up"
    previous = [handler.setStream(buffer) for handler in handlers]
    try:
        yield buffer
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def test_user_ids_are_logged_only_as_keyed_hashes(stack, ingest, api, catalog_function, monkeypatch):
    from tests.integration.conftest import upload_catalog
    from tests.scenarios import catalog_lines

    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    upload_catalog(stack, catalog_function, catalog_lines())
    events = [behaviour(f"p{n}", PERSON, type="search", text="space opera", ts=1_700_000_000 + n) for n in range(3)]
    store = ingest_pipeline().store
    with lambda_log_lines() as logs:
        with mock.patch.object(store, "update", side_effect=RuntimeError("injected: write failed")), \
                pytest.raises(BatchProcessingError):  # every record failed: retried; the failure is logged
            ingest(kinesis_event(events))
        assert ingest(kinesis_event(events)) == {"batchItemFailures": []}
        for method, path in (("GET", f"/users/{PERSON}/recommendations"), ("GET", f"/users/{PERSON}/profile"),
                             ("DELETE", f"/users/{PERSON}")):
            assert api(method, path)[0] == 200
    logs = logs.getvalue()
    assert '"level":"INFO"' in logs
    assert "writing a user's interest failed" in logs and user_ref(PERSON) in logs
    assert PERSON not in logs


def test_the_reference_is_keyed(monkeypatch):
    plain = user_ref(PERSON)
    monkeypatch.setenv("PULSE_LOG_HASH_KEY", "a secret")
    assert user_ref(PERSON) != plain and user_ref(PERSON) == user_ref(PERSON) and len(user_ref(PERSON)) == 18


def test_forgetting_a_user_removes_their_state_and_recent_items(stack, ingest, api, catalog_function):
    from tests.integration.conftest import upload_catalog
    from tests.scenarios import catalog_items, catalog_lines

    upload_catalog(stack, catalog_function, catalog_lines())
    item = catalog_items()[0]["item_id"]
    assert ingest(kinesis_event([behaviour("f1", PERSON, item_id=item)])) == {"batchItemFailures": []}
    assert PERSON in table_items(stack) and api("GET", f"/users/{PERSON}/profile")[1]["recent_items"] == [item]
    assert api("DELETE", f"/users/{PERSON}") == (200, {"user_id": PERSON, "forgotten": True})
    assert PERSON not in table_items(stack)
    status, answer = api("GET", f"/users/{PERSON}/recommendations")
    assert status == 200 and answer["strategy"] == "popular"  # nothing personal left to score with


def test_pulse_forget_erases_users_from_the_archive_and_its_earlier_versions(stack, capsys):
    bucket = stack.name_of("AWS::S3::Bucket")
    s3 = stack.client("s3")
    lines = [json.dumps(behaviour(f"a{n}", user, item_id="m1", ts=1_700_000_000 + n))
             for n, user in enumerate([PERSON, "bob", PERSON, "carol"])]
    lines.append('{"user_id": ' + json.dumps(PERSON) + ', "type": "garb')  # a parked line that is not JSON
    for part in (1, 2):
        s3.put_object(Bucket=bucket, Key=f"archive/dt=2026-11-20/part-{part}.gz",
                      Body=gzip.compress(("\n".join(lines[part - 1::2]) + "\n").encode()))
    s3.put_object(Bucket=bucket, Key="archive/dt=2026-11-21/untouched.gz",
                  Body=gzip.compress(json.dumps(behaviour("b9", "bob", item_id="m2")).encode()))

    assert main(["forget", PERSON, "--bucket", bucket]) == 0
    assert "3 objects read, 1 rewritten without 3 lines" in capsys.readouterr().out
    remaining = list(read_archive(bucket, dt.date(2026, 11, 20), dt.date(2026, 11, 21)))
    assert sorted(event.event_id for event in remaining) == ["a1", "a3", "b9"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix="archive/")
    assert len(versions["Versions"]) == 3  # the rewritten objects' earlier versions are gone too
    for version in versions["Versions"]:
        body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
        assert PERSON.encode() not in gzip.decompress(body)
