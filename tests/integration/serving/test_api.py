"""The read path on moto: the catalogue function publishes, the ingest handler applies, the API handler answers."""

import json
import time

import pytest

from pulse.events.behaviour import EVENT_TYPES, MAX_ID_BYTES, MAX_TEXT_LENGTH
from tests.builders import behaviour, kinesis_event
from tests.integration.conftest import counted_api, upload_catalog
from tests.scenarios import GENRE_TITLES, catalog_items, catalog_lines, item_id_of

T0 = 1_700_000_000


@pytest.fixture
def published(stack, catalog_function):
    result = upload_catalog(stack, catalog_function, catalog_lines())
    (entry,) = result["results"]
    assert entry["status"] == "published"
    return entry["version"]


def genre_of(item_id):
    return next(item["categories"][0] for item in catalog_items() if item["item_id"] == item_id)


def test_publishing_writes_every_file_of_the_version_before_the_current_pointer(stack, catalog_function):
    from pulse import aws

    written = []  # the catalogue function's PutObject calls, in order
    aws.client("s3").meta.events.register("provide-client-params.s3.PutObject",
                                          lambda params, **_: written.append(params["Key"]))
    (entry,) = upload_catalog(stack, catalog_function, catalog_lines())["results"]
    s3 = stack.client("s3")
    bucket = stack.name_of("AWS::S3::Bucket")
    base = f"catalog/versions/{entry['version']}/"
    version_files = {obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]}
    assert {base + "embeddings.npy", base + "items.json", base + "manifest.json"} <= version_files
    catalogue_writes = [key for key in written if key.startswith("catalog/")]
    assert catalogue_writes[-1] == "catalog/CURRENT" and catalogue_writes.count("catalog/CURRENT") == 1
    assert set(catalogue_writes[:-1]) == version_files
    assert json.loads(s3.get_object(Bucket=bucket, Key="catalog/CURRENT")["Body"].read())["version"] == \
        entry["version"]
    written.clear()
    again = upload_catalog(stack, catalog_function, catalog_lines(), key="incoming/again.jsonl")
    assert again["results"][0]["version"] == entry["version"]  # same input, same version: idempotent
    assert [key for key in written if key.startswith("catalog/")] == ["catalog/CURRENT"]  # files not rewritten


def test_an_invalid_catalogue_file_publishes_nothing_and_says_why(stack, catalog_function):
    result = upload_catalog(stack, catalog_function, [*catalog_lines(), '{"title": "no id"}'])
    assert result["results"][0]["status"] == "rejected"
    s3 = stack.client("s3")
    bucket = stack.name_of("AWS::S3::Bucket")
    report = json.loads(s3.get_object(Bucket=bucket, Key="reports/incoming/catalog.jsonl.json")["Body"].read())
    assert report["problems"] == [[33, "item_id is required"]]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="catalog/")


def test_recommendations_follow_recent_behaviour(stack, api, ingest, published):
    sci_fi = [item_id_of(title) for title in GENRE_TITLES["Sci-Fi"][:3]]
    ingest(kinesis_event([behaviour(f"s{i}", "fan", type="like", item_id=item, ts=T0 + i)  # no text: catalogue
                          for i, item in enumerate(sci_fi)], first_sequence=1))
    status, answer = api("GET", "/users/fan/recommendations", f"k=4&at={T0 + 60}")
    assert status == 200 and answer["strategy"] == "personal" and answer["catalog_version"] == published
    assert [genre_of(item["item_id"]) for item in answer["items"]] == ["Sci-Fi"] * 4
    assert not set(sci_fi) & {item["item_id"] for item in answer["items"]}  # seen items excluded
    assert all(item["reason"].startswith("close to ") for item in answer["items"])

    horror = [item_id_of(title) for title in GENRE_TITLES["Horror"][:4]]
    later = T0 + 30 * 86400  # a month later the user binges horror: the short time scale takes over
    ingest(kinesis_event([behaviour(f"h{i}", "fan", type="like", item_id=item, ts=later + i * 60)
                          for i, item in enumerate(horror)], first_sequence=10))
    status, answer = api("GET", "/users/fan/recommendations", f"k=3&at={later + 600}")
    assert [genre_of(item["item_id"]) for item in answer["items"]] == ["Horror"] * 3
    assert "m24" not in {item["item_id"] for item in answer["items"]}  # Halloween is unavailable

    status, answer = api("GET", "/users/fan/recommendations", f"k=3&at={later + 600}&category=Sci-Fi")
    assert [genre_of(item["item_id"]) for item in answer["items"]] == ["Sci-Fi"] * 3


def test_unknown_users_get_popular_items(api, published):
    status, answer = api("GET", "/users/nobody/recommendations", "k=3")
    assert status == 200
    assert answer == {"user_id": "nobody", "strategy": "popular", "catalog_version": published, "items": [
        {"item_id": "m1", "score": 1.0, "reason": "popular"},
        {"item_id": "m2", "score": 0.99, "reason": "popular"},
        {"item_id": "m3", "score": 0.98, "reason": "popular"}]}


def test_similar_items_profile_health_and_forget(stack, api, ingest, published):
    status, answer = api("GET", f"/items/{item_id_of('Toy Story (1995)')}/similar", "k=3")
    assert status == 200 and [genre_of(item["item_id"]) for item in answer["items"]] == ["Animation"] * 3

    ingest(kinesis_event([behaviour("p1", "kid", type="click", item_id=item_id_of("Aladdin (1992)"), ts=T0),
                          behaviour("p2", "kid", type="search", text="disney princess cartoons", ts=T0 + 5)]))
    status, profile = api("GET", "/users/kid/profile", f"at={T0 + 60}")
    assert status == 200 and profile["event_count"] == 2
    assert profile["recent_items"] == [item_id_of("Aladdin (1992)")]
    assert set(profile["scales"]) == {"short", "long"}
    assert profile["scales"]["long"]["top_categories"][0] == "Animation"
    assert profile["scales"]["short"]["strength"] < profile["scales"]["long"]["strength"]  # 1 min = 1/30 half-life

    status, health = api("GET", "/health")
    assert status == 200 and health["catalog_version"] == published and health["item_count"] == 32
    assert len(health["encoder_fingerprint"]) == 64

    assert api("DELETE", "/users/kid") == (200, {"user_id": "kid", "forgotten": True})
    assert api("GET", "/users/kid/profile")[0] == 404
    assert api("DELETE", "/users/kid") == (200, {"user_id": "kid", "forgotten": False})


def test_post_events_puts_valid_events_to_kinesis_and_reports_the_rest(stack, api, published):
    events = [behaviour("a1", "web", type="view", item_id="m1", ts=T0),
              behaviour("a2", "web", type="teleport", item_id="m1", ts=T0),
              {"event_id": "a3", "user_id": "web", "type": "view", "item_id": "m1"}]
    status, answer = api("POST", "/events", body={"events": events})
    assert status == 202
    assert answer == {"accepted": 1, "rejected": [
        {"index": 1, "error": "unknown type 'teleport'; expected one of view, click, add_to_cart, purchase, like, "
                              "dislike, skip, rate, search"},
        {"index": 2, "error": "ts is required (epoch seconds or ISO-8601 with time zone)"}]}
    kinesis = stack.client("kinesis")
    stream = stack.name_of("AWS::Kinesis::Stream")
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    (record,) = kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    assert record["PartitionKey"] == "web" and json.loads(record["Data"])["event_id"] == "a1"


def test_a_lone_surrogate_in_type_or_ts_rejects_that_event_and_the_rest_of_the_batch_is_put(stack, api, published):
    """Found by review: JSON can carry a lone UTF-16 surrogate ("\\ud800"); quoted in the event's error it made
    the validation itself fail, and the request answered 500 with nothing put."""
    events = [behaviour("s1", "web", type="view", item_id="m1", ts=T0),
              behaviour("s2", "web", type="\ud800", item_id="m1", ts=T0),
              behaviour("s3", "web", type="view", item_id="m1", ts="2024-01-01T00:00:00\udc80")]
    status, answer = api("POST", "/events", body={"events": events})
    assert status == 202
    assert answer["accepted"] == 1
    assert [(rejection["index"], rejection["error"][:21]) for rejection in answer["rejected"]] == [
        (1, "unknown type '\\ud800'"), (2, "ts '2024-01-01T00:00:")]


def test_each_recommendations_answer_counts_once_in_the_metric_of_its_strategy(stack, ingest, published, capsys):
    ingest(kinesis_event([behaviour(f"s{i}", "fan", type="like", item_id=item_id_of(title), ts=T0 + i)
                          for i, title in enumerate(GENRE_TITLES["Sci-Fi"][:3])]))
    with counted_api(stack, capsys) as api:
        status, answer, metrics = api("GET", "/users/nobody/recommendations", "k=3")
        assert status == 200 and answer["strategy"] == "popular"
        assert metrics == {"RecommendationsPopular": ([1.0], "Count")}
        status, answer, metrics = api("GET", "/users/fan/recommendations", f"k=3&at={T0 + 60}")
        assert status == 200 and answer["strategy"] == "personal"
        assert metrics == {"RecommendationsPersonal": ([1.0], "Count")}


def test_post_events_counts_the_accepted_events_in_the_events_received_metric(stack, published, capsys):
    valid = [behaviour(f"a{i}", "web", type="view", item_id="m1", ts=T0 + i) for i in range(2)]
    invalid = behaviour("bad", "web", type="teleport", item_id="m1", ts=T0)
    with counted_api(stack, capsys) as api:
        status, answer, metrics = api("POST", "/events", body={"events": [valid[0], invalid, valid[1]]})
        assert status == 202 and answer["accepted"] == 2 and [r["index"] for r in answer["rejected"]] == [1]
        assert metrics == {"EventsReceived": ([2.0], "Count")}
        status, answer, metrics = api("POST", "/events", body={"events": [invalid]})
        assert status == 202 and answer["accepted"] == 0 and len(answer["rejected"]) == 1
        assert metrics == {"EventsReceived": ([0.0], "Count")}  # a request that puts nothing still counts its 0


@pytest.mark.parametrize(("method", "path", "query", "body", "status", "message"), [
    ("GET", "/users/u/recommendations", "k=0", None, 400, "query.k: Input should be greater than or equal to 1"),
    ("GET", "/users/u/recommendations", "k=101", None, 400, "query.k: Input should be less than or equal to 100"),
    ("GET", "/users/u/recommendations", "k=ten", None, 400, "query.k: Input should be a valid integer"),
    ("GET", "/users/u/recommendations", "at=-5", None, 400, "query.at"),
    ("GET", "/users/u/recommendations", "exclude_seen=maybe", None, 400, "query.exclude_seen"),
    ("GET", "/items/m1/similar", "k=500", None, 400, "query.k"),
    ("GET", "/items/nope/similar", "", None, 404, "item 'nope' is not in catalogue"),
    ("GET", "/users/nobody/profile", "", None, 404, "user 'nobody' has no recorded behaviour"),
    ("GET", "/no/such/route", "", None, 404, "no route GET /no/such/route"),
    ("PATCH", "/health", "", None, 404, "no route PATCH /health"),
    ("POST", "/events", "", "{not json", 400, "invalid request"),
    ("POST", "/events", "", {"events": []}, 400, "body.events: List should have at least 1 item"),
    ("POST", "/events", "", {"events": [{}] * 501}, 400, "List should have at most 500 items"),
    ("POST", "/events", "", {"evnts": []}, 400, "body.events: Field required"),
    ("POST", "/events", "", [1, 2], 400, "invalid request"),
])
def test_bad_input_gets_a_4xx_that_names_the_problem(api, published, method, path, query, body, status, message):
    answer_status, answer = api(method, path, query, body)
    assert answer_status == status
    assert message in answer["error"], answer
    assert "Traceback" not in json.dumps(answer)


def test_the_openapi_document_is_generated_from_the_code(api):
    status, document = api("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    assert {"/users/{user_id}/recommendations", "/items/{item_id}/similar", "/users/{user_id}/profile",
            "/users/{user_id}", "/events", "/health"} <= set(document["paths"])
    parameters = {p["name"]: p for p in document["paths"]["/users/{user_id}/recommendations"]["get"]["parameters"]}
    assert parameters["k"]["schema"]["maximum"] == 100 and parameters["k"]["schema"]["minimum"] == 1


def test_the_openapi_document_describes_the_behaviour_event(api):
    """POST /events documents the event (contract 1) from the model that validates it, while a batch still takes
    objects that do not match it (they come back in `rejected`, the request is not refused)."""
    document = api("GET", "/openapi.json")[1]
    schemas = document["components"]["schemas"]
    body = document["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    events = schemas[body["$ref"].rsplit("/", 1)[1]]["properties"]["events"]
    assert {"$ref": "#/components/schemas/BehaviourEvent"} in events["items"]["anyOf"]
    assert (events["minItems"], events["maxItems"]) == (1, 500)
    event = schemas["BehaviourEvent"]
    assert set(event["required"]) == {"event_id", "user_id", "type", "ts"}
    assert set(event["properties"]) == {"event_id", "user_id", "type", "item_id", "text", "value", "ts"}
    assert event["properties"]["type"]["enum"] == list(EVENT_TYPES)
    assert event["properties"]["user_id"]["maxLength"] == MAX_ID_BYTES
    assert event["properties"]["text"]["maxLength"] == MAX_TEXT_LENGTH
    assert {"type": "string", "format": "date-time"} in event["properties"]["ts"]["anyOf"]
    assert event["anyOf"] == [{"required": ["item_id"]}, {"required": ["text"]}]  # item_id and/or text
    assert {"if": {"properties": {"type": {"const": "rate"}}, "required": ["type"]},
            "then": {"required": ["value"]}} in event["allOf"]


def test_without_a_catalogue_the_api_answers_503_not_500(api):
    status, answer = api("GET", "/users/u/recommendations")
    assert status == 503 and "no catalogue has been published yet" in answer["error"]
    assert api("GET", "/health")[1]["status"] == "degraded"


def test_a_corrupted_new_version_is_refused_and_the_old_one_keeps_serving(stack, api, published):
    s3 = stack.client("s3")
    bucket = stack.name_of("AWS::S3::Bucket")
    base = f"catalog/versions/{published}/"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=base + "manifest.json")["Body"].read())
    assert api("GET", "/health")[1]["catalog_version"] == published

    names = [entry["Key"].removeprefix(base) for entry in s3.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]]
    files = [name for name in names if name != "manifest.json"]  # the rows, the items, the int8 codes and scales

    broken = {**manifest, "version": "v-broken", "count": manifest["count"] + 1}  # shapes disagree
    for name in files:
        body = s3.get_object(Bucket=bucket, Key=base + name)["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"catalog/versions/v-broken/{name}", Body=body)
    s3.put_object(Bucket=bucket, Key="catalog/versions/v-broken/manifest.json", Body=json.dumps(broken))
    s3.put_object(Bucket=bucket, Key="catalog/CURRENT", Body=json.dumps({"version": "v-broken"}))
    assert api("GET", "/health")[1]["catalog_version"] == published
    assert api("GET", "/users/x/recommendations")[1]["catalog_version"] == published

    other_encoder = {**manifest, "version": "v-other", "encoder_fingerprint": "0" * 64}
    s3.put_object(Bucket=bucket, Key="catalog/versions/v-other/manifest.json", Body=json.dumps(other_encoder))
    s3.put_object(Bucket=bucket, Key="catalog/CURRENT", Body=json.dumps({"version": "v-other"}))
    assert api("GET", "/health")[1]["catalog_version"] == published
    s3.put_object(Bucket=bucket, Key="catalog/CURRENT", Body=json.dumps({"version": "v-missing"}))
    assert api("GET", "/health")[1]["catalog_version"] == published

    def refused(version, manifest_body, embeddings=None):
        """A version whose manifest (or rows) is damaged: refused by name, the old one keeps serving."""
        for name in files:
            body = s3.get_object(Bucket=bucket, Key=base + name)["Body"].read()
            s3.put_object(Bucket=bucket, Key=f"catalog/versions/{version}/{name}", Body=body)
        if embeddings is not None:
            s3.put_object(Bucket=bucket, Key=f"catalog/versions/{version}/embeddings.npy", Body=embeddings)
        s3.put_object(Bucket=bucket, Key=f"catalog/versions/{version}/manifest.json", Body=manifest_body)
        s3.put_object(Bucket=bucket, Key="catalog/CURRENT", Body=json.dumps({"version": version}))
        health = api("GET", "/health")[1]
        assert health["catalog_version"] == published and health["refused"]["version"] == version
        assert api("GET", "/users/x/recommendations")[0] == 200
        return health["refused"]["reason"]

    assert "manifest.json does not parse" in refused("v-truncated", json.dumps(manifest)[:-20])
    assert "no sha256 table" in refused("v-no-sha", json.dumps({k: v for k, v in manifest.items() if k != "sha256"}))
    import io

    import numpy as np

    rows = np.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=base + "embeddings.npy")["Body"].read()))
    rows[3, 5] = np.nan
    damaged = io.BytesIO()
    np.save(damaged, rows)
    import hashlib

    nan_manifest = {**manifest, "sha256": {**manifest["sha256"],
                                           "embeddings.npy": hashlib.sha256(damaged.getvalue()).hexdigest()}}
    assert "non-finite" in refused("v-nan", json.dumps(nan_manifest), damaged.getvalue())


def test_post_events_rejects_future_dates_non_standard_json_and_oversize_records_and_puts_compact_json(
        stack, api, published):
    """A view dated a year ahead, Infinity in a field and a record over the stream's 64 KiB used to be put as
    they came; a multi-line or decomposed-Unicode payload now goes out as one compact line with NFC ids."""
    now = time.time()
    events = [behaviour("f1", "web", item_id="m1", ts=now + 365 * 86400),
              behaviour("f2", "web", item_id="m1", ts=T0, score="INFINITY"),
              behaviour("f3", "web", item_id="m1", ts=T0, context="x" * 70_000),
              behaviour("f4", "jose\u0301", item_id="m1", ts=T0, device={"kind": "tv"})]
    body = json.dumps({"events": events}, indent=2).replace('"INFINITY"', "Infinity")
    status, answer = api("POST", "/events", body=body)
    assert status == 202 and answer["accepted"] == 1, answer
    errors = {entry["index"]: entry["error"] for entry in answer["rejected"]}
    assert errors[0].endswith("s in the future; the limit is 300 s (PULSE_MAX_CLOCK_SKEW_SECONDS)")
    assert "NaN and Infinity are not JSON numbers" in errors[1]
    assert errors[2].endswith("bytes as JSON; the stream's limit is 65536 bytes per record")
    (record,) = stream_records(stack)
    assert record["PartitionKey"] == "jos\u00e9" and b"\n" not in record["Data"] and b": " not in record["Data"]
    assert json.loads(record["Data"]) == {**events[3], "user_id": "jos\u00e9"}


def test_path_ids_are_normalised_and_ids_no_event_can_have_are_not_found(api, published):
    status, answer = api("GET", "/users/mallory\u202eyrollam/profile")
    assert status == 404 and "no user can have this id: user_id holds a format (invisible or bidi control) " \
        "character U+202E" in answer["error"]
    assert "mallory" not in answer["error"]
    status, answer = api("DELETE", "/users/jose\u0301")
    assert status == 200 and answer["user_id"] == "jos\u00e9"
    status, answer = api("GET", "/items/" + "\u00e9" * 65 + "/similar")
    assert status == 404 and "no item can have this id: item_id must be 1-128 bytes in UTF-8, got 130" in answer[
        "error"]


def stream_records(stack) -> list[dict]:
    kinesis = stack.client("kinesis")
    stream = stack.name_of("AWS::Kinesis::Stream")
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
