"""The S3 catalogue repository at its edges (moto's S3): what publish writes, in which order (CURRENT last) and
in which form; what it answers when the version is already there; a prefix given without its slash; a malformed
CURRENT pointer; S3 answering a bare 403 or not answering at all; the API's load (rows mapped from a file, the
published int8 codes)."""

import hashlib
import io
import json
import time
from dataclasses import replace
from unittest import mock

import botocore.exceptions
import numpy as np
import pytest

from pulse import aws
from pulse.catalog.store import CatalogRefusedError, CatalogStoreError, S3CatalogRepository
from pulse.catalog.version import hybrid_vectors, in_memory_catalog
from tests.integration.catalog.test_catalog_faults import access_denied, learned_version


@pytest.fixture
def repository(stack):
    return S3CatalogRepository(stack.name_of("AWS::S3::Bucket"))


def stored(repository, key):
    return aws.client("s3").get_object(Bucket=repository.bucket, Key=key)["Body"].read()


def hybrid(version, text_to_collab):
    rng = np.random.default_rng(11)
    return replace(in_memory_catalog(["a", "b"], hybrid_vectors(rng.normal(size=(2, 4)), rng.normal(size=(2, 2)),
                                                                 0.5, 0.5),
                                     fingerprint="enc-1", text_to_collab=text_to_collab, text_weight=0.5,
                                     collab_weight=0.5), version=version)


@pytest.fixture
def puts(repository):
    """The keys the repository writes, in order."""
    keys, real = [], S3CatalogRepository._put

    def recorded(self, key, body):
        keys.append(key)
        real(self, key, body)

    with mock.patch.object(S3CatalogRepository, "_put", recorded):
        yield keys


def test_publish_writes_every_file_then_the_manifest_then_current_and_says_it_wrote_them(repository, puts):
    catalog = hybrid("v-new", np.ones((4, 2)))
    before = time.time()
    assert repository.publish(catalog, training_state={"warm": np.array([True, False])}) is True
    base = "catalog/versions/v-new/"
    assert puts == [base + "embeddings.npy", base + "codes.npy", base + "scales.npy", base + "items.json",
                    base + "text_to_collab.npy", base + "training.npz", base + "manifest.json", "catalog/CURRENT"]
    manifest = json.loads(stored(repository, base + "manifest.json"))
    assert manifest["version"] == "v-new" and (manifest["count"], manifest["dim"]) == (2, 6)
    assert manifest["space"] == {"kind": "hybrid", "text_weight": 0.5, "collab_weight": 0.5, "text_dim": 4,
                                 "collab_dim": 2}
    assert sorted(manifest["sha256"]) == ["codes.npy", "embeddings.npy", "items.json", "scales.npy",
                                          "text_to_collab.npy", "training.npz"]
    current = json.loads(stored(repository, "catalog/CURRENT"))
    assert sorted(current) == ["published_at", "version"] and current["version"] == "v-new"
    assert before <= current["published_at"] <= time.time()


def test_publishing_a_complete_version_again_only_moves_current_and_says_nothing_was_written(repository, puts):
    repository.publish(learned_version("v-old", 0.0))
    repository.publish(learned_version("v-new", 0.0))
    puts.clear()
    assert repository.publish(learned_version("v-old", 0.0)) is False
    assert puts == ["catalog/CURRENT"] and repository.current_version() == "v-old"


def test_a_prefix_given_without_its_slash_is_used_as_a_folder(stack):
    repository = S3CatalogRepository(stack.name_of("AWS::S3::Bucket"), prefix="shop")
    assert repository.prefix == "shop/"
    repository.publish(learned_version("v1", 0.0))
    assert json.loads(stored(repository, "shop/CURRENT"))["version"] == "v1"
    assert repository.current_version() == "v1" and repository.load("v1", "enc-1").item_ids == ["a", "b", "c"]


def test_items_are_stored_as_utf8_text_not_escaped(repository):
    repository.publish(replace(learned_version("v-accents", 0.0), titles=["Amélie", "東京物語", None]))
    body = stored(repository, "catalog/versions/v-accents/items.json")
    assert "Amélie".encode() in body and "東京物語".encode() in body and b"\\u" not in body
    assert repository.load("v-accents", "enc-1").titles == ["Amélie", "東京物語", None]


def test_matrices_given_as_float64_are_stored_and_read_back_as_float32(repository):
    catalog = hybrid("v-wide", np.arange(8, dtype=np.float64).reshape(4, 2))
    repository.publish(replace(catalog, embeddings=catalog.embeddings.astype(np.float64)))
    for name in ("embeddings.npy", "text_to_collab.npy"):
        assert np.load(io.BytesIO(stored(repository, f"catalog/versions/v-wide/{name}"))).dtype == np.float32
    loaded = repository.load("v-wide", "enc-1")
    assert loaded.text_to_collab.dtype == np.float32 and loaded.text_to_collab.tolist() == [[0, 1], [2, 3], [4, 5],
                                                                                             [6, 7]]


@pytest.mark.parametrize("pointer", [b"v1", b'{"name": "v1"}', b'["v1"]'])
def test_a_current_pointer_that_is_not_a_version_object_is_refused_saying_so(repository, pointer):
    aws.client("s3").put_object(Bucket=repository.bucket, Key="catalog/CURRENT", Body=pointer)
    with pytest.raises(CatalogRefusedError) as error:
        repository.current_version()
    assert str(error.value) == 'the CURRENT pointer is not {"version": ...}'


def forbidden(operation="GetObject"):
    """S3's answer to a request that carried no error body: the status code alone."""
    return botocore.exceptions.ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, operation)


@pytest.mark.parametrize("denial", [forbidden(), access_denied()], ids=["403", "AccessDenied"])
def test_a_denied_read_of_a_missing_key_reads_as_missing_and_of_an_existing_one_is_a_store_error(repository,
                                                                                              denial):
    repository.publish(learned_version("v1", 0.0))
    s3 = aws.s3_for_checked_reads()
    with mock.patch.object(s3, "get_object", side_effect=denial):
        assert repository.load_training_state("v1") is None
        with pytest.raises(CatalogStoreError, match="^reading s3://[^/]+/catalog/CURRENT failed: An error occurred"):
            repository.current_version()


def test_a_store_that_cannot_be_reached_is_a_store_error_naming_the_key(repository):
    unreachable = botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3.example")
    with mock.patch.object(aws.s3_for_checked_reads(), "get_object", side_effect=unreachable), \
            pytest.raises(CatalogStoreError) as error:
        repository.load("v1", "enc-1")
    assert str(error.value) == (f"reading s3://{repository.bucket}/catalog/versions/v1/manifest.json failed: "
                                'Could not connect to the endpoint URL: "https://s3.example"')


def rows_version(version, count=300, dim=24):
    rng = np.random.default_rng(count)
    rows = rng.normal(size=(count, dim))
    return replace(in_memory_catalog([f"i{n}" for n in range(count)], rows / np.linalg.norm(rows, axis=1,
                                                                                         keepdims=True)),
                   version=version)


def test_the_api_load_maps_the_rows_from_an_unlinked_file_and_takes_the_published_codes(repository, tmp_path,
                                                                                           monkeypatch):
    from pulse.catalog.int8 import quantize_rows
    from pulse.serving import int8_scan

    published = rows_version("v-api")
    repository.publish(published)
    loaded = repository.load("v-api", None, rows_dir=str(tmp_path))
    assert np.array_equal(loaded.embeddings, published.embeddings) and not loaded.embeddings.flags.writeable
    assert list(tmp_path.iterdir()) == []  # unlinked at once: the mapping holds the space until the version goes
    codes, scales = quantize_rows(published.embeddings)
    assert np.array_equal(loaded.quantized[0], codes) and np.array_equal(loaded.quantized[1], scales)

    def not_again(matrix):
        raise AssertionError("the published codes are used, not recomputed")

    monkeypatch.setattr(int8_scan, "quantize_rows", not_again)
    served = int8_scan.prepare_for_serving(loaded)
    assert np.array_equal(served.scan.codes, codes)
    assert served.quantized is None  # held once, by the scan
    plain = repository.load("v-api", None)
    assert plain.quantized is None and plain.embeddings.flags.writeable  # the ingest and the training: as before


def test_a_version_published_before_the_codes_is_quantized_when_the_api_loads_it(repository, tmp_path):
    from pulse.serving.int8_scan import prepare_for_serving

    repository.publish(rows_version("v-old-layout"))
    base = "catalog/versions/v-old-layout/"
    manifest = json.loads(stored(repository, base + "manifest.json"))
    for name in ("codes.npy", "scales.npy"):
        del manifest["sha256"][name]
        aws.client("s3").delete_object(Bucket=repository.bucket, Key=base + name)
    aws.client("s3").put_object(Bucket=repository.bucket, Key=base + "manifest.json", Body=json.dumps(manifest))
    loaded = repository.load("v-old-layout", None, rows_dir=str(tmp_path))
    assert loaded.quantized is None and prepare_for_serving(loaded).scan.codes.shape == (300, 24)


def replace_codes(repository, version, codes):
    """The version's codes.npy rewritten, its manifest's sha256 with it (so only the check on the codes can object)."""
    base = f"catalog/versions/{version}/"
    buffer = io.BytesIO()
    np.save(buffer, codes)
    manifest = json.loads(stored(repository, base + "manifest.json"))
    manifest["sha256"]["codes.npy"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    aws.client("s3").put_object(Bucket=repository.bucket, Key=base + "codes.npy", Body=buffer.getvalue())
    aws.client("s3").put_object(Bucket=repository.bucket, Key=base + "manifest.json", Body=json.dumps(manifest))


def test_codes_that_do_not_fit_the_rows_refuse_the_version_by_name(repository, tmp_path):
    repository.publish(rows_version("v-bad-codes"))
    replace_codes(repository, "v-bad-codes", np.zeros((299, 24), dtype=np.uint8))
    with pytest.raises(CatalogRefusedError, match=r"codes uint8\(299, 24\) .* do not fit float32\(300, 24\) rows"):
        repository.load("v-bad-codes", None, rows_dir=str(tmp_path))
    assert repository.load("v-bad-codes", None).version == "v-bad-codes"  # the ingest never reads the codes


def test_streamed_rows_that_do_not_match_their_sha256_refuse_the_version(repository, tmp_path):
    repository.publish(rows_version("v-altered-rows"))
    key = "catalog/versions/v-altered-rows/embeddings.npy"
    body = bytearray(stored(repository, key))
    body[-1] ^= 1
    aws.client("s3").put_object(Bucket=repository.bucket, Key=key, Body=bytes(body))
    with pytest.raises(CatalogRefusedError, match="embeddings.npy does not match its sha256"):
        repository.load("v-altered-rows", None, rows_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_without_room_on_the_disk_the_api_reads_the_rows_into_memory(repository, tmp_path, monkeypatch, caplog):
    from pulse.catalog import store

    class Full:
        free = 1 << 20

    repository.publish(rows_version("v-full-disk"))
    monkeypatch.setattr(store.shutil, "disk_usage", lambda folder: Full())
    loaded = repository.load("v-full-disk", None, rows_dir=str(tmp_path))
    assert loaded.embeddings.flags.writeable and loaded.quantized is not None
    assert "has no room" in caplog.text


def test_a_local_disk_that_fails_reads_the_rows_into_memory_rather_than_refusing_the_version(repository, tmp_path,
                                                                                            monkeypatch):
    repository.publish(rows_version("v-bad-disk"))
    loaded = repository.load("v-bad-disk", None, rows_dir=str(tmp_path / "no-such-folder"))
    assert loaded.embeddings.flags.writeable and loaded.version == "v-bad-disk"

    def full(self, key, sink):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(S3CatalogRepository, "_stream", full)
    assert repository.load("v-bad-disk", None, rows_dir=str(tmp_path)).embeddings.flags.writeable


def test_missing_rows_answered_with_access_denied_refuse_the_version_when_streamed(repository, tmp_path):
    """As deployed, S3 answers a missing key with AccessDenied (listing is granted under the prefix only)."""
    from tests.integration.catalog.test_catalog_faults import as_deployed

    repository.publish(rows_version("v-no-rows"))
    aws.client("s3").delete_object(Bucket=repository.bucket, Key="catalog/versions/v-no-rows/embeddings.npy")
    with as_deployed(aws.s3_for_checked_reads()), \
            pytest.raises(CatalogRefusedError, match="version v-no-rows: embeddings.npy is missing"):
        repository.load("v-no-rows", None, rows_dir=str(tmp_path))


def test_a_refusal_names_the_version_loaded_even_when_its_manifest_names_another(repository, tmp_path):
    repository.publish(rows_version("v-source"))
    repository.publish(rows_version("v-copy"))
    source = stored(repository, "catalog/versions/v-source/manifest.json")
    aws.client("s3").put_object(Bucket=repository.bucket, Key="catalog/versions/v-copy/manifest.json", Body=source)
    aws.client("s3").put_object(Bucket=repository.bucket, Key="catalog/versions/v-copy/items.json", Body=b"[]")
    with pytest.raises(CatalogRefusedError, match="^version v-copy: items.json does not match"):
        repository.load("v-copy", None, rows_dir=str(tmp_path))


def test_codes_that_are_not_the_rows_refuse_the_version_naming_a_row(repository, tmp_path):
    from pulse.catalog.int8 import quantize_rows

    published = rows_version("v-foreign-codes")
    repository.publish(published)
    replace_codes(repository, "v-foreign-codes", quantize_rows(published.embeddings[::-1])[0])  # of other rows
    with pytest.raises(CatalogRefusedError, match=r"codes.npy does not match the rows \(row \d+ and \d+ more"):
        repository.load("v-foreign-codes", None, rows_dir=str(tmp_path))
