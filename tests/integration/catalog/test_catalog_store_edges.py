"""The S3 catalogue repository at its edges (moto's S3): what publish writes, in which order (CURRENT last) and
in which form; what it answers when the version is already there; a prefix given without its slash; a malformed
CURRENT pointer; S3 answering a bare 403 or not answering at all."""

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
    assert puts == [base + "embeddings.npy", base + "items.json", base + "text_to_collab.npy",
                    base + "training.npz", base + "manifest.json", "catalog/CURRENT"]
    manifest = json.loads(stored(repository, base + "manifest.json"))
    assert manifest["version"] == "v-new" and (manifest["count"], manifest["dim"]) == (2, 6)
    assert manifest["space"] == {"kind": "hybrid", "text_weight": 0.5, "collab_weight": 0.5, "text_dim": 4,
                                 "collab_dim": 2}
    assert sorted(manifest["sha256"]) == ["embeddings.npy", "items.json", "text_to_collab.npy", "training.npz"]
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
    s3 = aws.client("s3")
    with mock.patch.object(s3, "get_object", side_effect=denial):
        assert repository.load_training_state("v1") is None
        with pytest.raises(CatalogStoreError, match="^reading s3://[^/]+/catalog/CURRENT failed: An error occurred"):
            repository.current_version()


def test_a_store_that_cannot_be_reached_is_a_store_error_naming_the_key(repository):
    unreachable = botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3.example")
    with mock.patch.object(aws.client("s3"), "get_object", side_effect=unreachable), \
            pytest.raises(CatalogStoreError) as error:
        repository.load("v1", "enc-1")
    assert str(error.value) == (f"reading s3://{repository.bucket}/catalog/versions/v1/manifest.json failed: "
                                'Could not connect to the endpoint URL: "https://s3.example"')
