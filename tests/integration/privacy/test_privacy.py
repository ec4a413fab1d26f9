"""Personal data: user ids never reach the logs in clear text at INFO (a keyed hash does), and
DELETE /users/{user_id} forgets everything Pulse keeps about a user."""

import base64
import datetime as dt
import gzip
import hashlib
import hmac
import io
import json
import logging
import time
from contextlib import contextmanager
from unittest import mock

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from pulse.events.archive import read_archive
from pulse.privacy import user_ref
from pulse.wiring import ingest_pipeline
from pulse_dev.cli import main
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


def test_the_reference_is_the_hmac_sha256_of_the_id_under_the_deployment_key(monkeypatch):
    monkeypatch.delenv("PULSE_LOG_KEY_SECRET", raising=False)
    references = {}
    for key in ("one deployment's key", "another deployment's key"):
        monkeypatch.setenv("PULSE_LOG_HASH_KEY", key)
        expected = hmac.new(key.encode(), PERSON.encode(), hashlib.sha256).hexdigest()[:16]
        assert user_ref(PERSON) == "u:" + expected
        references[key] = user_ref(PERSON)
    assert len(set(references.values())) == 2  # another key, another reference


def test_forgetting_a_user_removes_their_state_and_recent_items(stack, ingest, api, catalog_function):
    from tests.integration.conftest import upload_catalog
    from tests.scenarios import catalog_items, catalog_lines

    upload_catalog(stack, catalog_function, catalog_lines())
    item = catalog_items()[0]["item_id"]
    assert ingest(kinesis_event([behaviour("f1", PERSON, item_id=item)])) == {"batchItemFailures": []}
    assert PERSON in table_items(stack) and api("GET", f"/users/{PERSON}/profile")[1]["recent_items"] == [item]
    assert api("DELETE", f"/users/{PERSON}") == (200, {"user_id": PERSON, "forgotten": True})
    assert_forgotten(stack, api)  # nothing personal left to score with: a tombstone


def ingest_five(stack, ingest, api, catalog_function) -> list[dict]:
    from tests.integration.conftest import upload_catalog
    from tests.scenarios import catalog_items, catalog_lines

    upload_catalog(stack, catalog_function, catalog_lines())
    items = [item["item_id"] for item in catalog_items()[:5]]
    events = [behaviour(f"d{n}", PERSON, item_id=item, ts=1_700_000_000 + n) for n, item in enumerate(items)]
    assert ingest(kinesis_event(events)) == {"batchItemFailures": []}
    assert api("GET", f"/users/{PERSON}/profile")[1]["event_count"] == 5
    return events


def assert_forgotten(stack, api):
    assert api("GET", f"/users/{PERSON}/profile")[0] == 404
    status, answer = api("GET", f"/users/{PERSON}/recommendations")
    assert status == 200 and answer["strategy"] == "popular"
    tombstone = table_items(stack)[PERSON]  # the deletion time, and nothing about the person
    assert set(tombstone) <= {"user_id", "version", "forgotten_at", "updated_at", "expires_at", "event_count",
                              "scales", "applied_sequence"}
    assert tombstone["event_count"] == {"N": "0"} and tombstone["scales"] == {"L": []}
    assert int(tombstone["expires_at"]["N"]) > float(tombstone["forgotten_at"]["N"])


def test_a_deleted_user_stays_deleted_when_their_old_events_are_delivered_again(stack, ingest, api,
                                                                                catalog_function, monkeypatch):
    from tests.integration.conftest import dead_letters

    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    events = ingest_five(stack, ingest, api, catalog_function)
    assert api("DELETE", f"/users/{PERSON}") == (200, {"user_id": PERSON, "forgotten": True})
    with lambda_log_lines() as logs:
        assert ingest(kinesis_event(events)) == {"batchItemFailures": []}  # Lambda delivers the batch again
        assert ingest(kinesis_event(events, first_sequence=100)) == {"batchItemFailures": []}  # producer replay
    assert_forgotten(stack, api)
    assert dead_letters(stack) == []  # ignored, not parked
    logs = logs.getvalue()
    assert logs.count("ignored 5 events of a deleted user dated at or before the deletion") == 2
    assert '"forgotten":5' in logs and user_ref(PERSON) in logs and PERSON not in logs

    later = time.time() + 1  # new activity after the deletion starts a fresh profile; old events stay out
    assert ingest(kinesis_event([behaviour("new", PERSON, item_id=events[0]["item_id"], ts=later), *events],
                                first_sequence=200)) == {"batchItemFailures": []}
    profile = api("GET", f"/users/{PERSON}/profile")[1]
    assert (profile["event_count"], profile["first_event_ts"]) == (1, later)
    assert api("DELETE", f"/users/{PERSON}")[1]["forgotten"] is True
    assert api("DELETE", f"/users/{PERSON}")[1]["forgotten"] is False  # only the tombstone was left


@pytest.mark.parametrize("existing", [True, False], ids=["known-user", "first-events-in-flight"])
def test_a_batch_read_before_the_deletion_does_not_write_the_user_back(stack, ingest, api, catalog_function,
                                                                       existing):
    """The ingest reads the batch's users, the user is deleted, then the ingest writes: its write is conditional
    on the version it read, fails, and the retry reads the tombstone."""
    from tests.integration.conftest import upload_catalog
    from tests.scenarios import catalog_items, catalog_lines

    if existing:
        ingest_five(stack, ingest, api, catalog_function)
    else:
        upload_catalog(stack, catalog_function, catalog_lines())
    store = ingest_pipeline().store
    real_get_many = store.get_many

    def read_then_delete(user_ids):
        read = real_get_many(user_ids)
        assert api("DELETE", f"/users/{PERSON}")[1]["forgotten"] is existing
        return read

    in_flight = [behaviour(f"f{n}", PERSON, item_id=catalog_items()[n]["item_id"], ts=time.time() - 5 + n)
                 for n in range(3)]
    with mock.patch.object(store, "get_many", side_effect=read_then_delete):
        assert ingest(kinesis_event(in_flight, first_sequence=300)) == {"batchItemFailures": []}
    assert_forgotten(stack, api)
    assert store.conflicts >= 1


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
    assert "3 object versions read, 0 objects rewritten, 3 lines of 1 user(s) removed; 1 object versions holding " \
           "them deleted" in capsys.readouterr().out  # part-1 held only her lines: gone, every version
    remaining = list(read_archive(bucket, dt.date(2026, 11, 20), dt.date(2026, 11, 21)))
    assert sorted(event.event_id for event in remaining) == ["a1", "a3", "b9"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix="archive/")
    assert len(versions["Versions"]) == 2 and "DeleteMarkers" not in versions
    for version in versions["Versions"]:
        body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
        assert PERSON.encode() not in gzip.decompress(body)


def test_pulse_forget_covers_every_prefix_line_format_and_deleted_objects(stack, capsys):
    bucket = stack.name_of("AWS::S3::Bucket")
    s3 = stack.client("s3")
    zoe = "zoe\u0308"  # asked for in decomposed form, archived composed (NFC)
    own = {"person": json.dumps(behaviour("x1", PERSON, item_id="m1")), "zoe": json.dumps(behaviour("x2", "zo\u00eb"))}
    bob = json.dumps(behaviour("b1", "bob", item_id="m1", text=f"a gift for {PERSON}"))  # names her, is bob's
    firehose_error = {"attemptsMade": 4, "arrivalTimestamp": 1_700_000_000_000, "errorCode": "S3.AccessDenied",
                      "errorMessage": "Access Denied", "attemptEndingTimestamp": 1_700_000_060_000}
    objects = {
        "archive/dt=2026-11-20/part-1.gz": [own["person"], bob, json.dumps([behaviour("x3", PERSON)]),  # a list
                                            "{", f'  "user_id": "{PERSON}",', '  "text": "jazz"', "}",  # pretty
                                            f"user_id={PERSON} type=view", own["zoe"]],
        "archive-errors/processing-failed/dt=2026-11-20/part-2.gz": [
            json.dumps({**firehose_error, "rawData": base64.b64encode(own["person"].encode()).decode()}),
            json.dumps({**firehose_error, "rawData": base64.b64encode(bob.encode()).decode()})],
        "archive-errors/unknown/dt=2026-11-20/part-3": [f"{PERSON}\tnot gzip, not JSON", "bob\tstays"],
    }
    for key, lines in objects.items():
        body = ("\n".join(lines) + "\n").encode()
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body) if key.endswith(".gz") else body)
    parked = {"dead-letters/2026-11-20/shardId-0-1.bin": json.dumps(behaviour("x4", PERSON), indent=2),  # whole
              "dead-letters/2026-11-20/shardId-0-2.bin": json.dumps(behaviour("b2", "bob"), indent=2)}
    for key, record in parked.items():
        s3.put_object(Bucket=bucket, Key=key, Body=record.encode())
    s3.put_object(Bucket=bucket, Key="archive/dt=2026-11-19/gone.gz", Body=gzip.compress(own["person"].encode()))
    s3.delete_object(Bucket=bucket, Key="archive/dt=2026-11-19/gone.gz")  # its earlier version still holds her

    assert main(["forget", PERSON, zoe, "--bucket", bucket]) == 0
    assert "6 object versions read, 3 objects rewritten, 17 lines of 2 user(s) removed; 5 object versions " \
           "holding them deleted" in capsys.readouterr().out
    remaining = {}
    for version in s3.list_object_versions(Bucket=bucket)["Versions"]:
        body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
        remaining[version["Key"]] = gzip.decompress(body) if version["Key"].endswith(".gz") else body
    assert sorted(remaining) == sorted([*objects, "dead-letters/2026-11-20/shardId-0-2.bin"])  # one version each
    assert remaining["archive/dt=2026-11-20/part-1.gz"].decode().splitlines() == [bob]
    assert base64.b64decode(json.loads(remaining["archive-errors/processing-failed/dt=2026-11-20/part-2.gz"]
                                       )["rawData"]).decode() == bob
    assert remaining["archive-errors/unknown/dt=2026-11-20/part-3"] == b"bob\tstays\n"


def test_a_tombstone_lives_while_an_event_dated_before_the_deletion_can_still_be_accepted(stack):
    import numpy as np

    from pulse.events.behaviour import BehaviourEvent
    from pulse.interest.model import EmbeddedEvent, InterestSettings, apply_user_events
    from pulse.interest.store import DynamoInterestStore
    from pulse.settings import Settings

    day, deleted_at = 86400, 1_800_000_000.0
    assert Settings(ttl_days=180).tombstone_days == 180  # no event-age limit: the inactive-user TTL
    assert Settings(ttl_days=180, max_event_age_days=7).tombstone_days == 8  # older events are rejected by then
    now = [deleted_at]
    store = DynamoInterestStore(stack.name_of("AWS::DynamoDB::Table"), ttl_days=180, tombstone_days=8,
                                clock=lambda: now[0])
    assert store.delete(PERSON) is False
    assert int(table_items(stack)[PERSON]["expires_at"]["N"]) == deleted_at + 8 * day

    now[0] = deleted_at + day  # the user comes back: the item lives the inactive-user TTL, the tombstone in it
    event = BehaviourEvent(event_id="n1", user_id=PERSON, type="search", ts=deleted_at + 60, text="jazz")
    store.update(PERSON, lambda user: apply_user_events(user, [EmbeddedEvent(event, None, 1.0, np.ones(4))],
                                                        InterestSettings(half_lives={"long": 1e6})))
    item = table_items(stack)[PERSON]
    assert int(item["expires_at"]["N"]) == now[0] + 180 * day and float(item["forgotten_at"]["N"]) == deleted_at
