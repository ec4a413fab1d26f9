"""Behaviour the README documents that no other test pinned down, each through the real handlers on moto."""

import json
from unittest import mock

import pytest

from pulse.serving.service import RecommendationService
from pulse.settings import clear_settings
from pulse.wiring import reset_caches
from tests.builders import behaviour, kinesis_event, sequence_number
from tests.integration.conftest import CrashingEncoder, ingest_with, table_items, upload_catalog
from tests.integration.privacy.test_privacy import lambda_log_lines
from tests.scenarios import GENRE_TITLES, catalog_items, catalog_lines, item_id_of

T0 = 1_700_000_000
SCI_FI = [item_id_of(title) for title in GENRE_TITLES["Sci-Fi"][:3]]


@pytest.fixture
def published(stack, catalog_function):
    (entry,) = upload_catalog(stack, catalog_function, catalog_lines())["results"]
    assert entry["status"] == "published"
    return entry["version"]


def test_an_encoder_failure_retries_the_text_records_and_applies_the_item_records(stack, ingest, published):
    events = [behaviour("i1", "reader", type="like", item_id=SCI_FI[0], ts=T0),
              behaviour("t1", "searcher", type="search", text="space opera", ts=T0),
              behaviour("i2", "reader", type="like", item_id=SCI_FI[1], ts=T0 + 1),
              behaviour("t2", "searcher", type="search", text="robots", ts=T0 + 1)]
    event = kinesis_event(events)
    with ingest_with(stack, load_embedder=lambda real: CrashingEncoder) as crashing:
        response = crashing(event)
    assert [failure["itemIdentifier"] for failure in response["batchItemFailures"]] == [
        sequence_number(2), sequence_number(4)]  # the text records, retried
    stored = table_items(stack)
    assert set(stored) == {"reader"} and stored["reader"]["event_count"] == {"N": "2"}
    retry = {"Records": event["Records"][1:]}  # Lambda retries from the lowest failed record
    assert ingest(retry) == {"batchItemFailures": []}
    stored = table_items(stack)
    assert (stored["reader"]["event_count"], stored["searcher"]["event_count"]) == ({"N": "2"}, {"N": "2"})


def test_an_unexpected_error_answers_500_without_its_trace_and_logs_it(api, published, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    failure = RuntimeError("injected: the detail /var/task/pulse/serving/service.py must stay in the log")
    with lambda_log_lines() as logs, \
            mock.patch.object(RecommendationService, "recommendations", side_effect=failure):
        status, body = api("GET", "/users/someone/recommendations")
    assert (status, body) == (500, {"error": "internal error (logged)", "detail": None})
    logged = logs.getvalue()
    assert "unexpected error" in logged and "Traceback" in logged and "injected: the detail" in logged


def test_pulse_min_strength_sets_where_a_weak_interest_falls_back_to_popular(stack, ingest, api, published,
                                                                            monkeypatch):
    ingest(kinesis_event([behaviour("s1", "fan", type="like", item_id=SCI_FI[0], ts=T0)]))
    at = f"at={T0 + 3600}"
    strength = api("GET", "/users/fan/profile", at)[1]["strength"]
    assert api("GET", "/users/fan/recommendations", at)[1]["strategy"] == "personal"  # above the default 0.001
    for threshold, strategy in ((strength * 1.01, "popular"), (strength * 0.99, "personal")):
        monkeypatch.setenv("PULSE_MIN_STRENGTH", str(threshold))
        reset_caches()  # a new container: settings are read at cold start
        assert api("GET", "/users/fan/recommendations", at)[1]["strategy"] == strategy, threshold


def test_the_profile_is_computed_as_of_the_given_time_with_the_closest_items_of_each_scale(stack, ingest, api,
                                                                                          published):
    ingest(kinesis_event([behaviour(f"s{n}", "fan", type="like", item_id=item, ts=T0 + n)
                          for n, item in enumerate(SCI_FI)]))
    titles = {item["item_id"]: item["title"] for item in catalog_items()}
    sci_fi = {item_id_of(title) for title in GENRE_TITLES["Sci-Fi"]}
    soon = api("GET", "/users/fan/profile", f"at={T0 + 60}")[1]
    later = api("GET", "/users/fan/profile", f"at={T0 + 86400}")[1]
    assert (soon["as_of"], later["as_of"]) == (T0 + 60, T0 + 86400)
    for profile in (soon, later):
        for scale in profile["scales"].values():
            closest = scale["closest_items"]
            assert len(closest) == 5 and {entry["item_id"] for entry in closest} <= sci_fi
            assert [entry["title"] for entry in closest] == [titles[entry["item_id"]] for entry in closest]
            assert [entry["score"] for entry in closest] == sorted((entry["score"] for entry in closest),
                                                                   reverse=True)
            assert scale["top_categories"][0] == "Sci-Fi" and scale["decayed_from"] == T0 + 2
    # a day on, the short scale (30 min half-life) has faded by 2^-48 and the long one (30 days) barely
    short, long_ = (later["scales"][name]["strength"] / soon["scales"][name]["strength"] for name in ("short", "long"))
    assert short < 1e-6 and 0.97 < long_ < 0.98


def test_the_catalogue_function_skips_invalid_lines_when_told_to(stack, catalog_function, monkeypatch):
    monkeypatch.setenv("PULSE_CATALOG_SKIP_INVALID", "true")
    clear_settings()
    lines = [*catalog_lines(), '{"title": "no id"}', '{"item_id": "x1", "title": "fine"}']
    (entry,) = upload_catalog(stack, catalog_function, lines)["results"]
    assert entry["status"] == "published"
    s3 = stack.client("s3")
    bucket = stack.name_of("AWS::S3::Bucket")
    report = json.loads(s3.get_object(Bucket=bucket, Key="reports/incoming/catalog.jsonl.json")["Body"].read())
    assert (report["status"], report["items"], report["skipped"]) == ("published", 33, [[33, "item_id is required"]])
    current = json.loads(s3.get_object(Bucket=bucket, Key="catalog/CURRENT")["Body"].read())["version"]
    assert current == entry["version"]


@pytest.mark.parametrize(("count", "status"), [(64, "published"), (65, "rejected")])
def test_an_item_may_have_at_most_64_categories(stack, catalog_function, count, status):
    item = {"item_id": "many", "title": "A film of many kinds", "categories": [f"genre {n}" for n in range(count)]}
    (entry,) = upload_catalog(stack, catalog_function, [*catalog_lines(), json.dumps(item)])["results"]
    assert entry["status"] == status
    if status == "rejected":
        bucket = stack.name_of("AWS::S3::Bucket")
        report = json.loads(stack.client("s3").get_object(
            Bucket=bucket, Key="reports/incoming/catalog.jsonl.json")["Body"].read())
        assert report["problems"] == [[33, "65 categories; the limit is 64"]]


def test_exclude_seen_false_lets_the_items_a_user_engaged_with_back_in(stack, ingest, api, published):
    ingest(kinesis_event([behaviour(f"s{n}", "fan", type="like", item_id=item, ts=T0 + n)
                          for n, item in enumerate(SCI_FI)]))
    at = f"k=3&at={T0 + 60}"
    seen_out = api("GET", "/users/fan/recommendations", at)[1]["items"]
    seen_in = api("GET", "/users/fan/recommendations", at + "&exclude_seen=false")[1]["items"]
    assert not {item["item_id"] for item in seen_out} & set(SCI_FI)
    assert {item["item_id"] for item in seen_in} == set(SCI_FI)  # closest to the interest they make up


def test_a_batch_reads_its_users_with_one_consistent_batch_get_and_writes_each_once(stack, ingest,
                                                                                   dynamodb_requests):
    from tests.integration.conftest import sample_event

    calls = dynamodb_requests
    assert ingest(sample_event("ingest-many-users")) == {"batchItemFailures": []}  # 50 users
    reads = [arguments for operation, arguments in calls if operation == "BatchGetItem"]
    assert [operation for operation, _ in calls if operation not in ("BatchGetItem", "PutItem")] == []
    assert len(reads) == 1 and all(table["ConsistentRead"] for table in reads[0]["RequestItems"].values())
    assert sum(len(table["Keys"]) for table in reads[0]["RequestItems"].values()) == 50
    assert sum(operation == "PutItem" for operation, _ in calls) == 50
