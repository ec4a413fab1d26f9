"""A bad or unreachable catalogue version never takes the API down (moto's S3, the real handlers): every failure
while loading a new version is a refusal (or, for S3 errors, a retry later with backoff), the last good version
keeps serving, /health names both, and nothing is downloaded again on every request. 503 bodies say nothing
about the AWS account; the ingest retries item events it cannot look up instead of falling back to their text."""

import hashlib
import io
import json
import time
from dataclasses import replace
from unittest import mock

import botocore.exceptions
import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from pulse import aws
from pulse.catalog.store import CatalogRefusedError, CatalogStoreError, S3CatalogRepository
from pulse.catalog.version import hybrid_vectors, in_memory_catalog
from pulse.wiring import live_catalog
from tests.builders import behaviour, http_event, kinesis_event
from tests.integration.conftest import emitted_metrics, function_handler, table_items, upload_catalog
from tests.scenarios import catalog_items, catalog_lines

AWS_DETAIL = ("User: arn:aws:sts::123456789012:assumed-role/pulse-ApiFunctionRole-AbC/pulse-api is not authorized "
              "to perform: s3:GetObject on resource: arn:aws:s3:::pulse-catalog-bucket/catalog/CURRENT")


def access_denied(operation="GetObject"):
    return botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": AWS_DETAIL}}, operation)


def as_deployed(s3):
    """S3's GetObject as IAM lets the functions see it: a missing key answers AccessDenied, not NoSuchKey."""
    real_get = s3.get_object

    def get_as_deployed(**request):
        try:
            return real_get(**request)
        except s3.exceptions.NoSuchKey:
            raise access_denied() from None

    return mock.patch.object(s3, "get_object", side_effect=get_as_deployed)


@pytest.fixture
def published(stack, catalog_function):
    (entry,) = upload_catalog(stack, catalog_function, catalog_lines())["results"]
    return entry["version"]


class Bucket:
    def __init__(self, stack, published):
        self.s3, self.name, self.published = stack.client("s3"), stack.name_of("AWS::S3::Bucket"), published
        self.base = f"catalog/versions/{published}/"

    def get(self, key):
        return self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key, body):
        self.s3.put_object(Bucket=self.name, Key=key, Body=body)

    def copy_version(self, version, manifest_fields=None, **replaced):
        """The published version under another name, with files replaced (the manifest's sha256 kept true) and
        `manifest_fields` set in its manifest."""
        manifest = {**json.loads(self.get(self.base + "manifest.json")), **(manifest_fields or {})}
        for name in ("embeddings.npy", "items.json"):
            body = replaced.get(name, self.get(self.base + name))
            manifest["sha256"][name] = hashlib.sha256(body).hexdigest()
            self.put(f"catalog/versions/{version}/{name}", body)
        self.put(f"catalog/versions/{version}/manifest.json", json.dumps({**manifest, "version": version}))
        self.put("catalog/CURRENT", json.dumps({"version": version}))


@pytest.fixture
def bucket(stack, published):
    return Bucket(stack, published)


@pytest.fixture
def reads():
    """Counts the S3 reads of each catalogue key made by the containers' repositories."""
    counts: dict[str, int] = {}
    real_get, real_stream = S3CatalogRepository._get, S3CatalogRepository._stream

    def counted(self, key):
        counts[key] = counts.get(key, 0) + 1
        return real_get(self, key)

    def counted_stream(self, key, sink):  # the API streams the rows to a file
        counts[key] = counts.get(key, 0) + 1
        return real_stream(self, key, sink)

    with mock.patch.object(S3CatalogRepository, "_get", counted), \
            mock.patch.object(S3CatalogRepository, "_stream", counted_stream):
        yield counts


def version_reads(counts, version):
    return sum(count for key, count in counts.items() if f"/versions/{version}/" in key)


def test_a_version_whose_npy_cannot_be_loaded_is_refused_once_and_the_last_good_one_serves(api, bucket, reads):
    assert api("GET", "/health")[1]["catalog_version"] == bucket.published
    bucket.copy_version("v-corrupt-npy", **{"embeddings.npy": b"\x93NUMPY\x01\x00garbage"})
    for _ in range(5):
        assert api("GET", "/users/x/recommendations")[0] == 200
    health = api("GET", "/health")[1]
    assert health["catalog_version"] == bucket.published and health["status"] == "ok"
    assert health["refused"]["version"] == "v-corrupt-npy" and "cannot be read" in health["refused"]["reason"]
    assert version_reads(reads, "v-corrupt-npy") == 3  # manifest, embeddings.npy, items.json: once


@pytest.mark.parametrize("damage", ["truncated manifest", "no sha256", "nan row"])
def test_each_damaged_version_is_downloaded_once_not_on_every_request(api, bucket, reads, damage):
    version = "v-" + damage.replace(" ", "-")
    assert api("GET", "/health")[1]["catalog_version"] == bucket.published
    if damage == "nan row":
        rows = np.load(io.BytesIO(bucket.get(bucket.base + "embeddings.npy")))
        rows[2, 7] = np.nan
        buffer = io.BytesIO()
        np.save(buffer, rows)
        bucket.copy_version(version, **{"embeddings.npy": buffer.getvalue()})
    else:
        manifest = json.loads(bucket.get(bucket.base + "manifest.json"))
        body = json.dumps(manifest)[:-20] if damage == "truncated manifest" else json.dumps(
            {key: value for key, value in manifest.items() if key != "sha256"})
        bucket.put(f"catalog/versions/{version}/manifest.json", body)
        bucket.put("catalog/CURRENT", json.dumps({"version": version}))
    for _ in range(4):
        assert api("GET", "/users/x/recommendations")[1]["catalog_version"] == bucket.published
    assert api("GET", "/health")[1]["refused"]["version"] == version
    first = version_reads(reads, version)
    for _ in range(4):
        api("GET", "/users/x/recommendations")
    assert version_reads(reads, version) == first


def test_a_transient_s3_error_loading_a_new_version_keeps_the_old_one_and_retries_later_with_backoff(
        api, bucket, reads, catalog_function, stack):
    assert api("GET", "/health")[1]["catalog_version"] == bucket.published
    upload_catalog(stack, catalog_function, catalog_lines()[:-3], key="incoming/smaller.jsonl")
    new_version = json.loads(bucket.get("catalog/CURRENT"))["version"]
    real = S3CatalogRepository._get
    clock = [time.monotonic() + 1000]
    live_catalog().clock = lambda: clock[0]

    def failing(self, key):
        if f"/versions/{new_version}/" in key:
            raise access_denied()
        return real(self, key)

    with mock.patch.object(S3CatalogRepository, "_get", failing):
        for _ in range(5):
            status, answer = api("GET", "/users/x/recommendations")
            assert status == 200 and answer["catalog_version"] == bucket.published
        health = api("GET", "/health")[1]
        assert health["catalog_version"] == bucket.published
        assert health["deferred"]["version"] == new_version and health["deferred"]["retry_in_seconds"] > 0
        assert AWS_DETAIL not in json.dumps(health) and "123456789012" not in json.dumps(health)
    attempts = version_reads(reads, new_version)
    assert attempts == 1  # one failed attempt, not one per request
    assert api("GET", "/users/x/recommendations")[1]["catalog_version"] == bucket.published
    assert version_reads(reads, new_version) == attempts  # S3 is back, but the retry waits for its backoff
    clock[0] += health["deferred"]["retry_in_seconds"] + 0.001
    assert api("GET", "/users/x/recommendations")[1]["catalog_version"] == new_version
    health = api("GET", "/health")[1]
    assert health["catalog_version"] == new_version and health["deferred"] is None


def test_backoff_doubles_while_the_store_keeps_failing(api, bucket, catalog_function, stack):
    upload_catalog(stack, catalog_function, catalog_lines()[:-2], key="incoming/smaller.jsonl")
    clock = [time.monotonic() + 1000]
    live_catalog().clock = lambda: clock[0]
    waits = []
    with mock.patch.object(S3CatalogRepository, "load", side_effect=access_denied()) as load:
        for _ in range(4):
            api("GET", "/health")
            waits.append(api("GET", "/health")[1]["deferred"]["retry_in_seconds"])
            clock[0] += waits[-1]
        assert load.call_count == 4 and waits == sorted(waits) and waits[-1] == 8 * waits[0]


def test_a_503_tells_an_anonymous_caller_nothing_about_the_account(api, caplog):
    with mock.patch.object(S3CatalogRepository, "current_version", side_effect=access_denied()), \
            caplog.at_level("WARNING"):
        status, answer = api("GET", "/users/u/recommendations")
    assert status == 503 and answer["error"].startswith("the catalogue store cannot be reached")
    body = json.dumps(answer)
    assert "123456789012" not in body and "arn:aws" not in body and "AccessDenied" not in body
    assert AWS_DETAIL in caplog.text  # the detail is in the log, for the operator


def test_item_events_wait_for_the_catalogue_instead_of_falling_back_to_their_text(stack, ingest, published):
    item = catalog_items()[0]
    events = [behaviour("c1", "reader", item_id=item["item_id"], text="what the producer said it was"),
              behaviour("c2", "reader", type="search", text="space opera")]
    with mock.patch.object(S3CatalogRepository, "current_version", side_effect=access_denied()), \
            pytest.raises(BatchProcessingError):  # every record of the batch failed: Lambda retries it whole
        ingest(kinesis_event(events))
    assert "reader" not in table_items(stack)  # nothing applied with the text standing in for the item
    assert ingest(kinesis_event(events)) == {"batchItemFailures": []}
    assert int(table_items(stack)["reader"]["event_count"]["N"]) == 2


def test_a_catalogue_upload_with_huge_non_finite_or_deep_values_is_rejected_with_every_bad_line(
        stack, catalog_function):
    lines = [*catalog_lines()[:3],
             '{"item_id": "big", "title": "x", "popularity": ' + str(10**400) + "}",
             '{"item_id": "digits", "title": "x", "popularity": ' + "7" * 5000 + "}",
             '{"item_id": "deep", "title": "x", "extra": ' + "[" * 50_000 + "]" * 50_000 + "}",
             '{"item_id": "nan", "title": "x", "extra": NaN}',
             '{"item_id": "inf", "title": "x", "popularity": 1e999}',
             catalog_lines()[3]]
    (result,) = upload_catalog(stack, catalog_function, lines)["results"]
    assert result == {"key": "incoming/catalog.jsonl", "status": "rejected", "problems": 5}
    bucket = Bucket(stack, "none")
    report = json.loads(bucket.get("reports/incoming/catalog.jsonl.json"))
    assert [number for number, _ in report["problems"]] == [4, 5, 6, 7, 8]
    assert "popularity must be a non-negative number" in report["problems"][0][1]
    assert "Exceeds the limit" in report["problems"][1][1] and "nested too deeply" in report["problems"][2][1]
    assert "NaN is not a finite number" in report["problems"][3][1]
    assert "Contents" not in bucket.s3.list_objects_v2(Bucket=bucket.name, Prefix="catalog/")


def test_with_listing_limited_to_the_catalogue_prefix_a_missing_key_still_reads_as_missing(stack, api,
                                                                                           catalog_function):
    """IAM as deployed: s3:ListBucket only under catalog/*, so S3 answers GetObject of a missing key with
    AccessDenied (not NoSuchKey). A fresh deployment still says 'nothing published' and publishing still works."""
    # Both clients: the catalogue's reads (checked against the manifest) and every other S3 call.
    with as_deployed(aws.client("s3")), as_deployed(aws.s3_for_checked_reads()):
        status, answer = api("GET", "/users/u/recommendations")
        assert status == 503 and answer["error"].startswith("no catalogue has been published yet")
        (entry,) = upload_catalog(stack, catalog_function, catalog_lines())["results"]
        assert entry["status"] == "published"
        assert api("GET", "/users/u/recommendations")[1]["catalog_version"] == entry["version"]


def published_fingerprint(bucket):
    return json.loads(bucket.get(bucket.base + "manifest.json"))["encoder_fingerprint"]


@pytest.mark.parametrize("name", ["embeddings.npy", "items.json"])
def test_the_s3_repository_refuses_a_file_whose_bytes_differ_from_its_sha256_in_the_manifest(bucket, name):
    """The altered file is still a valid one (two rows swapped, a title changed): only the checksum tells."""
    repository, fingerprint = S3CatalogRepository(bucket.name), published_fingerprint(bucket)
    bucket.copy_version("v-altered")
    assert repository.load("v-altered", fingerprint).version == "v-altered"
    if name == "embeddings.npy":
        rows = np.load(io.BytesIO(bucket.get(bucket.base + name)))
        buffer = io.BytesIO()
        np.save(buffer, rows[[1, 0, *range(2, len(rows))]])
        altered = buffer.getvalue()
    else:
        columns = json.loads(bucket.get(bucket.base + name))
        columns["titles"][0] = "Another title"
        altered = json.dumps(columns).encode()
    bucket.put(f"catalog/versions/v-altered/{name}", altered)
    with pytest.raises(CatalogRefusedError,
                       match=f"version v-altered: {name} does not match its sha256 in the manifest"):
        repository.load("v-altered", fingerprint)


def test_the_s3_repository_refuses_a_complete_version_embedded_by_another_encoder(bucket):
    repository, fingerprint = S3CatalogRepository(bucket.name), published_fingerprint(bucket)
    bucket.copy_version("v-other-encoder", {"encoder_fingerprint": "0" * 64})
    assert repository.load("v-other-encoder", "0" * 64).encoder_fingerprint == "0" * 64  # whole and valid
    with pytest.raises(CatalogRefusedError, match=f"version v-other-encoder was embedded by encoder {'0' * 64}, "
                                             f"this deployment runs {fingerprint}"):
        repository.load("v-other-encoder", fingerprint)


@pytest.mark.filterwarnings("ignore:No application metrics to publish")  # a /health with nothing to count
def test_the_api_counts_a_refused_version_once_in_the_catalog_refused_metric(stack, bucket, capsys):
    """A complete version embedded by another encoder: /health names it, CatalogRefusedError is 1, then not again."""
    with function_handler(stack, "ApiFunction", metrics=True) as handler:
        def health():
            capsys.readouterr()
            answer = json.loads(handler(http_event("GET", "/health"))["body"])
            return answer, emitted_metrics(capsys.readouterr().out)

        answer, metrics = health()
        assert answer["catalog_version"] == bucket.published and "CatalogRefused" not in metrics
        bucket.copy_version("v-other-encoder", {"encoder_fingerprint": "0" * 64})
        answer, metrics = health()
        assert answer["catalog_version"] == bucket.published
        assert answer["refused"] == {"version": "v-other-encoder", "reason": (
            f"version v-other-encoder was embedded by encoder {'0' * 64}, this deployment runs "
            f"{published_fingerprint(bucket)}")}
        assert metrics["CatalogRefused"] == ([1.0], "Count")
        answer, metrics = health()
        assert answer["refused"]["version"] == "v-other-encoder" and "CatalogRefused" not in metrics


def test_the_catalogue_function_counts_published_items_and_rejected_files_in_its_metrics(stack, capsys):
    with function_handler(stack, "CatalogFunction", metrics=True) as handler:
        capsys.readouterr()
        (published,) = upload_catalog(stack, handler, catalog_lines())["results"]
        assert published["status"] == "published"
        assert emitted_metrics(capsys.readouterr().out) == {
            "CatalogItemsPublished": ([float(len(catalog_lines()))], "Count")}
        (rejected,) = upload_catalog(stack, handler, [*catalog_lines()[:2], "{not json"])["results"]
        assert rejected["status"] == "rejected"
        assert emitted_metrics(capsys.readouterr().out) == {"CatalogFilesRejected": ([1.0], "Count")}


LEARNED = {"half_lives": {"short": 600.0, "long": 86400.0}, "blend_weights": {"short": 1.0, "long": 0.2},
           "rating_weighting": "stars", "trending_half_life": 604800.0}


def learned_version(name, popularity_weight, trending=(0.0, 0.0, 0.0)):
    return with_settings(name, {**LEARNED, "popularity_weight": popularity_weight}, trending)


def with_settings(name, settings, trending=(0.0, 0.0, 0.0)):
    return replace(in_memory_catalog(["a", "b", "c"], np.eye(3), fingerprint="enc-1", trending=np.array(trending)),
                   version=name, settings=settings)


def stored_items(stack, version):
    return json.loads(Bucket(stack, version).get(f"catalog/versions/{version}/items.json"))


def test_a_versions_trending_prior_is_stored_with_its_items_and_read_back(stack):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    repository.publish(learned_version("v-trend", 1.0, trending=(1.0, 0.1234567, 0.0)))
    assert stored_items(stack, "v-trend")["trending"] == [1.0, 0.123457, 0.0]
    loaded = repository.load("v-trend", "enc-1")
    assert loaded.trending.tolist() == [1.0, 0.123457, 0.0] and loaded.settings["popularity_weight"] == 1.0
    repository.publish(learned_version("v-flat", 0.0))  # no trend learned: no column, zeros when read
    assert "trending" not in stored_items(stack, "v-flat")
    assert repository.load("v-flat", "enc-1").trending.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("weight", [2.0, float("nan"), -0.5])
def test_a_version_whose_learned_popularity_weight_is_out_of_bounds_is_refused(stack, weight):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    repository.publish(learned_version("v-heavy", weight))
    with pytest.raises(CatalogRefusedError, match="version v-heavy: its learned settings are malformed"):
        repository.load("v-heavy", "enc-1")


def test_learned_settings_are_served_exactly_when_pulse_settings_can_use_them(stack):
    """Positive finite half-lives (under a second too), finite blend weights for the same names, stars or flat,
    a popularity weight in [0, 1] or none at all; anything else, or settings of the wrong shape, is refused."""
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    accepted = [{**LEARNED, "half_lives": {"short": 0.5, "long": 86400.0}}, {**LEARNED, "rating_weighting": "flat"},
                LEARNED, {**LEARNED, "popularity_weight": 1.0}]
    for number, settings in enumerate(accepted):
        repository.publish(with_settings(f"v-ok-{number}", settings))
        assert repository.load(f"v-ok-{number}", "enc-1").settings == settings
    refused = [{**LEARNED, "half_lives": {"short": life, "long": 86400.0}} for life in (0.0, -600.0, float("inf"))]
    refused += [{**LEARNED, "half_lives": {"short": "soon", "long": 86400.0}},
                {**LEARNED, "half_lives": ["short", "long"]},
                {**LEARNED, "blend_weights": {"short": float("nan"), "long": 0.2}},
                {**LEARNED, "blend_weights": {"short": 1.0}},
                {key: value for key, value in LEARNED.items() if key != "blend_weights"},
                {**LEARNED, "rating_weighting": "FLAT"}, {**LEARNED, "popularity_weight": 1.0001},
                ["half_lives", "blend_weights"]]
    for number, settings in enumerate(refused):
        repository.publish(with_settings(f"v-bad-{number}", settings))
        with pytest.raises(CatalogRefusedError) as error:
            repository.load(f"v-bad-{number}", "enc-1")
        assert str(error.value) == f"version v-bad-{number}: its learned settings are malformed: {settings!r:.200}"


def test_a_versions_training_state_is_read_back_as_stored_and_never_unpickled(stack):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    state = {"text": np.arange(6, dtype=np.float32).reshape(2, 3), "warm": np.array([True, False])}
    repository.publish(learned_version("v-state", 0.0), training_state=state)
    loaded = repository.load_training_state("v-state")
    assert sorted(loaded) == ["text", "warm"] and loaded["text"].dtype == np.float32
    assert loaded["text"].tolist() == [[0, 1, 2], [3, 4, 5]] and loaded["warm"].tolist() == [True, False]
    repository.publish(learned_version("v-stateless", 0.0))
    assert repository.load_training_state("v-stateless") is None
    pickled = io.BytesIO()
    np.savez(pickled, text=np.array([{"run": "me"}], dtype=object))
    stack.client("s3").put_object(Bucket=repository.bucket, Key="catalog/versions/v-stateless/training.npz",
                                  Body=pickled.getvalue())
    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        repository.load_training_state("v-stateless")


@pytest.fixture
def s3_calls():
    """The S3 clients the repository uses, its GetObject failing with AccessDenied and its listings recorded."""
    s3, listings = aws.client("s3"), []
    real_list = s3.list_objects_v2

    def listed(**request):
        listings.append(request)
        return real_list(**request)

    with mock.patch.object(aws.s3_for_checked_reads(), "get_object", side_effect=access_denied()), \
            mock.patch.object(s3, "list_objects_v2", side_effect=listed) as listing:
        yield listings, listing


def test_access_denied_on_a_key_that_exists_is_a_store_error_found_by_listing_that_key_alone(stack, s3_calls):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    repository.publish(learned_version("v1", 0.0))
    listings, _ = s3_calls
    with pytest.raises(CatalogStoreError) as error:
        repository.load("v1", "enc-1")
    key = "catalog/versions/v1/manifest.json"
    assert str(error.value) == (f"reading s3://{repository.bucket}/{key} failed: An error occurred (AccessDenied) "
                                f"when calling the GetObject operation: {AWS_DETAIL}")
    # publish found the manifest missing, load found it there: each time by listing that key alone
    assert listings == [{"Bucket": repository.bucket, "Prefix": key, "MaxKeys": 1}] * 2


def test_access_denied_on_a_missing_key_reads_as_missing_even_when_a_longer_key_starts_with_it(stack, s3_calls):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    stack.client("s3").put_object(Bucket=repository.bucket, Key="catalog/CURRENT.old", Body=b'{"version": "v0"}')
    assert repository.current_version() is None


def test_a_listing_that_fails_too_is_a_store_error_naming_the_key(stack, s3_calls):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))
    _, listing = s3_calls
    listing.side_effect = access_denied("ListObjectsV2")
    with pytest.raises(CatalogStoreError) as error:
        repository.current_version()
    assert str(error.value) == (f"listing s3://{repository.bucket}/catalog/CURRENT failed: An error occurred "
                                f"(AccessDenied) when calling the ListObjectsV2 operation: {AWS_DETAIL}")


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_a_version_whose_files_are_missing_or_of_the_wrong_type_or_shape_is_refused_saying_which(bucket):
    repository, fingerprint = S3CatalogRepository(bucket.name), published_fingerprint(bucket)
    rows = np.load(io.BytesIO(bucket.get(bucket.base + "embeddings.npy")))
    count, dim = rows.shape
    damaged = {
        "v-float64": ({"embeddings.npy": npy(rows.astype(np.float64))},
                      f"embeddings are float64({count}, {dim}), the manifest says float32({count}, {dim})"),
        "v-short": ({"embeddings.npy": npy(rows[1:])},
                    f"embeddings are float32({count - 1}, {dim}), the manifest says float32({count}, {dim})"),
        "v-pickled": ({"embeddings.npy": npy(np.array([{"run": "me"}], dtype=object))},
                      "cannot be read (ValueError: Object arrays cannot be loaded when allow_pickle=False)"),
    }
    for version, (files, reason) in damaged.items():
        bucket.copy_version(version, **files)
        with pytest.raises(CatalogRefusedError) as error:
            repository.load(version, fingerprint)
        assert str(error.value) == f"version {version}: {reason}"
    bucket.copy_version("v-no-items")
    bucket.s3.delete_object(Bucket=bucket.name, Key="catalog/versions/v-no-items/items.json")
    with pytest.raises(CatalogRefusedError) as error:
        repository.load("v-no-items", fingerprint)
    assert str(error.value) == "version v-no-items: items.json is missing"


def test_a_version_whose_manifest_or_ids_are_wrong_is_refused_saying_which(bucket):
    repository, fingerprint = S3CatalogRepository(bucket.name), published_fingerprint(bucket)
    with pytest.raises(CatalogRefusedError) as error:
        repository.load("v-never-published", fingerprint)
    assert str(error.value) == "version v-never-published: manifest.json is missing"
    manifests = {"v-not-json": (b"{not json", "manifest.json does not parse (Expecting property name enclosed in "
                                              "double quotes: line 1 column 2 (char 1))"),
                 "v-no-table": (b'{"count": 3}', "manifest.json has no sha256 table")}
    for version, (body, reason) in manifests.items():
        bucket.put(f"catalog/versions/{version}/manifest.json", body)
        with pytest.raises(CatalogRefusedError) as error:
            repository.load(version, fingerprint)
        assert str(error.value) == f"version {version}: {reason}"
    columns = json.loads(bucket.get(bucket.base + "items.json"))
    columns["item_ids"][1] = columns["item_ids"][0]
    bucket.copy_version("v-repeats", **{"items.json": json.dumps(columns).encode()})
    with pytest.raises(CatalogRefusedError) as error:
        repository.load("v-repeats", fingerprint)
    assert str(error.value) == "version v-repeats: item ids repeat"


def test_a_hybrid_version_whose_text_map_is_missing_or_altered_is_refused(stack):
    repository, s3 = S3CatalogRepository(stack.name_of("AWS::S3::Bucket")), stack.client("s3")
    rng = np.random.default_rng(3)
    hybrid = replace(in_memory_catalog(["a", "b"], hybrid_vectors(rng.normal(size=(2, 4)), rng.normal(size=(2, 2)),
                                                                   0.5, 0.5),
                                       fingerprint="enc-1", text_to_collab=rng.normal(size=(4, 2)), text_weight=0.5,
                                       collab_weight=0.5), version="v-hybrid")
    repository.publish(hybrid)
    assert repository.load("v-hybrid", "enc-1").text_to_collab.shape == (4, 2)
    key = "catalog/versions/v-hybrid/text_to_collab.npy"
    s3.put_object(Bucket=repository.bucket, Key=key, Body=npy(np.zeros((4, 2), dtype=np.float32)))
    with pytest.raises(CatalogRefusedError,
                       match="^version v-hybrid: text_to_collab.npy is missing or does not match$"):
        repository.load("v-hybrid", "enc-1")
    manifest_key = "catalog/versions/v-hybrid/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=repository.bucket, Key=manifest_key)["Body"].read())
    for body, reason in [(npy(np.zeros((4, 3), dtype=np.float32)), "text_to_collab is (4, 3), dim is 6"),
                         (npy(np.array([{"run": "me"}], dtype=object)),
                          "cannot be read (ValueError: Object arrays cannot be loaded when allow_pickle=False)")]:
        manifest["sha256"]["text_to_collab.npy"] = hashlib.sha256(body).hexdigest()
        s3.put_object(Bucket=repository.bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
        s3.put_object(Bucket=repository.bucket, Key=key, Body=body)
        with pytest.raises(CatalogRefusedError) as error:
            repository.load("v-hybrid", "enc-1")
        assert str(error.value) == f"version v-hybrid: {reason}"
    s3.delete_object(Bucket=repository.bucket, Key=key)
    with pytest.raises(CatalogRefusedError) as error:
        repository.load("v-hybrid", "enc-1")
    assert str(error.value) == "version v-hybrid: text_to_collab.npy is missing or does not match"


def test_a_version_is_read_back_with_every_column_and_an_older_manifest_with_the_defaults(stack):
    repository, s3 = S3CatalogRepository(stack.name_of("AWS::S3::Bucket")), stack.client("s3")
    rng = np.random.default_rng(5)
    repository.publish(replace(in_memory_catalog(
        ["a", "b"], hybrid_vectors(rng.normal(size=(2, 4)), rng.normal(size=(2, 2)), 0.75, 0.25), fingerprint="enc-1",
        text_to_collab=rng.normal(size=(4, 2)), text_weight=0.75, collab_weight=0.25, titles=["A", None],
        categories=[["Comedy"], []], available=np.array([True, False]), popularity=np.array([3.0, 0.5]),
        trending=np.array([0.25, 1.0])), version="v-full", created_at=1234.5, basis="t-1", trained_until=99.0))
    loaded = repository.load("v-full", "enc-1")
    assert (loaded.item_ids, loaded.titles, loaded.categories, loaded.available.tolist(), loaded.popularity.tolist(),
            loaded.trending.tolist()) == (["a", "b"], ["A", None], [["Comedy"], []], [True, False], [3.0, 0.5],
                                          [0.25, 1.0])
    assert (loaded.created_at, loaded.text_weight, loaded.collab_weight, loaded.basis, loaded.trained_until,
            loaded.encoder_fingerprint) == (1234.5, 0.75, 0.25, "t-1", 99.0, "enc-1")

    repository.publish(replace(in_memory_catalog(["a"], np.ones((1, 2)), fingerprint="f" * 20), version="v-old"))
    key = "catalog/versions/v-old/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=repository.bucket, Key=key)["Body"].read())
    for optional in ("created_at", "basis", "settings", "trained_until"):
        del manifest[optional]
    s3.put_object(Bucket=repository.bucket, Key=key, Body=json.dumps(manifest).encode())
    old = repository.load("v-old", "f" * 20)
    assert (old.created_at, old.text_weight, old.collab_weight, old.basis, old.trained_until, old.settings,
            old.text_to_collab, old.trending.tolist()) == (0.0, 1.0, 0.0, "text-ffffffffffff", None, None, None, [0.0])
