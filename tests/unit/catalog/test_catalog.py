"""Catalogue publishing (validation with line numbers, content versions) and the live catalogue's pointer swap."""

import json

import numpy as np
import pytest

from pulse.catalog.build import (
    InvalidCatalogError,
    build_catalog,
    content_version,
    extend_space,
    parse_catalog_lines,
    publish_catalog,
)
from pulse.catalog.store import CatalogRefusedError, CatalogUnavailableError, LiveCatalog
from pulse.catalog.version import CatalogVersion, hybrid_vectors, in_memory_catalog

LINES = [
    json.dumps({"item_id": "1", "title": "Toy Story (1995)", "categories": ["Animation", "Comedy"],
                "popularity": 452, "year": 1995}),
    json.dumps({"item_id": "2", "title": "GoldenEye (1995)", "categories": ["Action"], "available": False}),
    "",
    json.dumps({"item_id": "3", "text": "A quiet film about a lighthouse keeper"}),
]


def test_valid_lines_parse_with_free_metadata():
    items, problems = parse_catalog_lines(LINES)
    assert problems == []
    assert [item.item_id for item in items] == ["1", "2", "3"]
    assert items[0].metadata == {"year": 1995}
    assert items[0].embedding_text == "Toy Story (1995) Animation Comedy"
    assert items[1].available is False and items[0].popularity == 452.0


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not valid JSON"),
    (json.dumps({"title": "no id"}), "item_id is required"),
    (json.dumps({"item_id": "x" * 129, "title": "x"}), "item_id must be 1-128 bytes in UTF-8, got 129"),
    (json.dumps({"item_id": "é" * 65, "title": "x"}), "item_id must be 1-128 bytes in UTF-8, got 130"),
    (json.dumps({"item_id": "9"}), "needs a title or a text"),
    (json.dumps({"item_id": "9", "title": "x", "categories": "Comedy"}), "categories must be a list"),
    (json.dumps({"item_id": "9", "title": "x", "available": "yes"}), "available must be true or false"),
    (json.dumps({"item_id": "9", "title": "x", "popularity": -1}), "popularity must be a non-negative number"),
    (json.dumps({"item_id": "1", "title": "again"}), "item_id '1' repeats line 1"),
    (json.dumps([1]), "an item must be a JSON object"),
    ('{"item_id": "9", "title": "x", "popularity": 1e400}', "not valid JSON: 1e400 is not a finite number"),
    ('{"item_id": "9", "title": "x", "popularity": NaN}', "not valid JSON: NaN is not a finite number"),
    ('{"item_id": "9", "title": "x", "popularity": ' + "9" * 5000 + "}", "not valid JSON: Exceeds the limit"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON: nested too deeply"),
    ('{"item_id": "9", "title": "x", "popularity": ' + str(10**400) + "}", "popularity must be a non-negative"),
    ('{"item_id": "9", "title": "x", "rating": NaN}', "not valid JSON: NaN is not a finite number"),
    ('{"item_id": "9", "title": "x", "rating": -Infinity}', "not valid JSON: -Infinity is not a finite number"),
    ('{"item_id": "9", "title": "x", "rating": 2e308}', "not valid JSON: 2e308 is not a finite number"),
    (json.dumps({"item_id": "9", "title": "x" * 4001}), "title is 4001 characters; the limit is 4000"),
])
def test_bad_lines_are_reported_with_their_line_number(line, message):
    items, problems = parse_catalog_lines([LINES[0], line])
    assert len(items) == 1
    assert problems[0][0] == 2 and message in problems[0][1]


class FakeEncoder:
    fingerprint = "enc-1"

    def __init__(self):
        self.batches = []

    def encode(self, texts):
        self.batches.append(len(texts))
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class MemoryRepository:
    def __init__(self):
        self.versions, self.current, self.loads, self.pointer_reads = {}, None, 0, 0
        self.broken = False

    def publish(self, catalog, training_state=None):
        new = catalog.version not in self.versions
        self.versions[catalog.version] = catalog
        self.current = catalog.version
        return new

    def current_version(self):
        self.pointer_reads += 1
        if self.broken:
            raise ConnectionError("injected: S3 unreachable")
        return self.current

    def load(self, version, expected_fingerprint):
        self.loads += 1
        catalog = self.versions[version]
        if catalog.encoder_fingerprint != expected_fingerprint:
            raise CatalogRefusedError(f"version {version} was embedded by another encoder")
        return catalog


def test_publishing_is_idempotent_and_refuses_invalid_input_unless_told():
    repository, encoder = MemoryRepository(), FakeEncoder()
    first = publish_catalog(LINES, encoder, repository, batch_size=2)
    assert encoder.batches == [2, 1]
    again = publish_catalog(LINES, encoder, repository)
    assert (first.version, first.new_files, again.version, again.new_files) == (first.version, True, first.version,
                                                                                 False)
    with pytest.raises(InvalidCatalogError, match="line 5: not valid JSON"):
        publish_catalog([*LINES, "{oops"], encoder, repository)
    assert repository.current == first.version  # nothing published
    skipped = publish_catalog([*LINES, "{oops"], encoder, repository, skip_invalid=True)
    assert skipped.items == 3 and skipped.skipped[0][0] == 5


def test_versions_depend_on_content_and_encoder():
    items, _ = parse_catalog_lines(LINES)
    assert content_version(items, "a") == content_version(list(items), "a")
    assert content_version(items, "a") != content_version(items, "b")
    assert content_version(items, "a") != content_version(items[:2], "a")


def test_built_rows_are_unit_length_float32():
    items, _ = parse_catalog_lines(LINES)
    catalog = build_catalog(items, FakeEncoder().encode, "enc-1")
    assert catalog.embeddings.dtype == np.float32 and catalog.embeddings.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(catalog.embeddings, axis=1), 1.0, atol=1e-6)
    assert catalog.category_rows["comedy"].tolist() == [0]


OUT_OF_RANGE = r"trending values must be finite numbers in \[0, 1\]"


@pytest.mark.parametrize(("trending", "message"), [
    ([0.5, 1.5], OUT_OF_RANGE), ([-0.1, 1.0], OUT_OF_RANGE), ([float("nan"), 1.0], OUT_OF_RANGE),
    ([1.0], "trending has 1 entries for 2 items"),
])
def test_a_version_refuses_a_trending_prior_outside_zero_to_one(trending, message):
    with pytest.raises(ValueError, match=message):
        in_memory_catalog(["a", "b"], np.eye(2), trending=np.array(trending))
    assert in_memory_catalog(["a", "b"], np.eye(2)).trending.tolist() == [0.0, 0.0]


def test_an_upload_joining_a_learned_space_keeps_each_items_trend_and_a_new_item_starts_at_zero():
    rng = np.random.default_rng(4)
    text, collab = rng.normal(size=(3, 8)), rng.normal(size=(3, 3))
    serving = in_memory_catalog(["a", "b", "c"], hybrid_vectors(text, collab, 0.5, 0.5),
                                text_to_collab=rng.normal(size=(8, 3)), text_weight=0.5, collab_weight=0.5,
                                trending=np.array([1.0, 0.25, 0.5]), basis="t-1")
    state = {"text": text, "collab": collab, "warm": np.array([True, True, False])}
    uploaded = in_memory_catalog(["c", "new", "a"], rng.normal(size=(3, 8)))
    extended, extended_state = extend_space(serving, state, uploaded)
    assert extended.item_ids == ["c", "new", "a"] and extended.basis == "t-1"
    assert extended.trending.tolist() == [0.5, 0.0, 1.0]  # "b" left with its trend
    assert extended_state["warm"].tolist() == [False, False, True]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def version(name, fingerprint="enc-1"):
    return CatalogVersion(version=name, item_ids=["a"], embeddings=np.full((1, 4), 0.5, dtype=np.float32),
                          encoder_fingerprint=fingerprint)


def test_the_live_catalogue_checks_the_pointer_at_most_every_interval_and_swaps_whole_versions():
    repository, clock, refused = MemoryRepository(), Clock(), []
    live = LiveCatalog(repository, "enc-1", check_interval=30, clock=clock, on_refused=refused.append)
    with pytest.raises(CatalogUnavailableError, match="no catalogue has been published"):
        live.current()
    repository.publish(version("v1"))
    clock.now = 31
    assert live.current().version == "v1"
    repository.publish(version("v2"))
    clock.now = 40
    assert live.current().version == "v1"  # not checked again before the interval
    reads = repository.pointer_reads
    clock.now = 62
    assert live.current().version == "v2"
    assert repository.pointer_reads == reads + 1

    repository.publish(version("v3", fingerprint="enc-OTHER"))
    clock.now = 100
    assert live.current().version == "v2"  # refused, the previous version keeps serving
    assert refused and "another encoder" in refused[0]
    clock.now = 200
    assert live.current().version == "v2" and repository.loads == 3  # a refused version is not retried

    repository.broken = True
    clock.now = 300
    assert live.current().version == "v2"  # store unreachable: keep serving


def test_while_nothing_is_served_the_pointer_is_read_at_most_once_a_second_not_per_request():
    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", check_interval=30, clock=clock)
    for _ in range(50):  # a burst of requests before anything is published
        with pytest.raises(CatalogUnavailableError):
            live.current()
    assert repository.pointer_reads == 1
    repository.publish(version("v1"))
    clock.now = 1.0
    assert live.current().version == "v1" and repository.pointer_reads == 2  # published: served within a second


def test_the_ingest_reader_treats_a_missing_catalogue_as_empty_but_an_unreachable_one_as_retryable():
    repository = MemoryRepository()
    live = LiveCatalog(repository, "enc-1", check_interval=0)
    assert live.embeddings_for(["a"]) == {}
    repository.broken = True
    with pytest.raises(CatalogUnavailableError):
        live.embeddings_for(["a"])


def test_a_store_error_loading_a_new_version_is_retried_with_a_doubling_backoff_while_the_old_one_serves():
    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", check_interval=0, clock=clock, retry_after=5, max_retry_after=20)
    repository.publish(version("v1"))
    assert live.current().version == "v1"
    repository.publish(version("v2"))
    real_load, failures = repository.load, [3]

    def flaky(name, fingerprint):
        if name == "v2" and failures[0] > 0:
            failures[0] -= 1
            raise ConnectionError("injected: S3 read timed out")
        return real_load(name, fingerprint)

    repository.load = flaky
    waits = []
    for _ in range(3):
        assert live.current().version == "v1"
        waits.append(live.deferred["retry_in_seconds"])
        loads = repository.loads
        assert live.current().version == "v1" and repository.loads == loads  # not again before the backoff
        clock.now += waits[-1]
    assert waits == [5, 10, 20] and live.last_refusal is None
    assert live.current().version == "v2" and live.deferred is None


def test_with_nothing_loaded_a_refused_or_unreachable_catalogue_is_retryable_and_a_missing_one_is_not():
    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", check_interval=0, clock=clock)
    with pytest.raises(CatalogUnavailableError) as missing:
        live.current()
    assert not missing.value.retryable and live.embeddings_for(["a"]) == {}
    repository.publish(version("v1", fingerprint="enc-other"))
    with pytest.raises(CatalogUnavailableError) as refused:
        live.embeddings_for(["a"])  # item events wait rather than be parked as unknown items
    assert refused.value.retryable and "v1 was refused" in str(refused.value)


POINTER_REFUSAL = 'the CURRENT pointer is not {"version": ...}'


class BadPointerRepository(MemoryRepository):
    def current_version(self):
        self.pointer_reads += 1
        raise CatalogRefusedError(POINTER_REFUSAL)


def test_a_malformed_current_pointer_is_refused_under_the_name_current_with_exact_messages(caplog):
    refused = []
    live = LiveCatalog(BadPointerRepository(), "enc-1", check_interval=0, clock=Clock(), on_refused=refused.append)
    with caplog.at_level("ERROR", logger="pulse.catalog.store"), pytest.raises(CatalogUnavailableError) as error:
        live.current()
    assert str(error.value) == ("catalogue version CURRENT was refused and no earlier version is loaded "
                                "(GET /health says why)") and error.value.retryable
    assert live.last_refusal == {"version": "CURRENT", "reason": POINTER_REFUSAL} and refused == [POINTER_REFUSAL]
    assert caplog.messages == [f"catalogue version refused: {POINTER_REFUSAL}"]


def test_with_nothing_published_the_message_says_how_to_publish_one():
    with pytest.raises(CatalogUnavailableError) as error:
        LiveCatalog(MemoryRepository(), "enc-1", clock=Clock()).current()
    assert str(error.value) == "no catalogue has been published yet (pulse catalog build FILE.jsonl)"
    assert not error.value.retryable


def failing_loads(repository, failures):
    """repository.load raises a store error `failures` times, then loads as before."""
    real_load, left = repository.load, [failures]

    def flaky(name, fingerprint):
        if left[0] > 0:
            left[0] -= 1
            raise ConnectionError("injected: S3 read timed out")
        return real_load(name, fingerprint)

    repository.load = flaky


def test_the_log_names_the_version_served_the_store_errors_and_each_refusal(caplog):
    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", check_interval=0, clock=clock, retry_after=5)
    with caplog.at_level("INFO", logger="pulse.catalog.store"):
        repository.broken = True
        with pytest.raises(CatalogUnavailableError):
            live.current()
        repository.broken = False
        repository.publish(version("v1"))
        live.current()
        repository.broken = True
        live.current()
        repository.broken = False
        repository.publish(version("v2"))
        failing_loads(repository, 1)
        live.current()
        repository.publish(version("v3", fingerprint="enc-OTHER"))
        live.current()
    assert caplog.messages == [
        "catalogue check failed; still serving nothing: injected: S3 unreachable",
        "serving catalogue v1 (1 items)",
        "catalogue check failed; still serving v1: injected: S3 unreachable",
        "loading catalogue version v2 failed; retrying in 5 s: injected: S3 read timed out",
        "catalogue version refused: version v3 was embedded by another encoder",
    ]


def test_a_version_deferred_on_a_store_error_then_refused_is_no_longer_deferred():
    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", check_interval=0, clock=clock, retry_after=5)
    repository.publish(version("v1", fingerprint="enc-OTHER"))
    failing_loads(repository, 1)
    with pytest.raises(CatalogUnavailableError, match="^the catalogue store cannot be reached; retrying$"):
        live.current()
    assert live.deferred == {"version": "v1", "retry_in_seconds": 5.0}
    clock.now = 5.0
    with pytest.raises(CatalogUnavailableError, match="^catalogue version v1 was refused and no earlier version"):
        live.current()
    assert live.deferred is None and live.last_refusal["version"] == "v1"


def test_by_default_the_pointer_is_checked_every_30_s_and_a_failed_load_retried_after_5_s_doubling_to_300():
    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", clock=clock)
    repository.publish(version("v1"))
    assert live.current().version == "v1"
    repository.publish(version("v2"))
    clock.now = 29.999
    assert live.current().version == "v1"
    clock.now = 30.0
    assert live.current().version == "v2"

    retrying = LiveCatalog(repository, "enc-1", check_interval=0, clock=clock)
    failing_loads(repository, 100)
    waits = []
    for _ in range(8):
        with pytest.raises(CatalogUnavailableError):
            retrying.current()
        waits.append(retrying.deferred["retry_in_seconds"])
        clock.now += waits[-1]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300]


def test_the_ingest_reader_answers_from_the_version_served_and_as_an_empty_catalogue_before_one():
    repository, text = MemoryRepository(), np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    live = LiveCatalog(repository, "enc-1", check_interval=0, clock=Clock())
    assert live.learned_settings() is None and live.text_vectors_for(["a"]) == {}
    assert live.embed_texts(text) is text
    rng = np.random.default_rng(7)
    repository.publish(CatalogVersion(
        version="v1", item_ids=["a"], embeddings=hybrid_vectors(rng.normal(size=(1, 4)), rng.normal(size=(1, 2)),
                                                               0.5, 0.5).astype(np.float32),
        encoder_fingerprint="enc-1", text_to_collab=rng.normal(size=(4, 2)), text_weight=0.5, collab_weight=0.5,
        settings={"rating_weighting": "flat"}))
    served = live.current()
    assert live.learned_settings() == {"rating_weighting": "flat"}
    np.testing.assert_array_equal(live.text_vectors_for(["a", "b"])["a"], served.text_vectors_for(["a"])["a"])
    assert list(live.text_vectors_for(["a", "b"])) == ["a"]
    np.testing.assert_array_equal(live.embed_texts(text), served.embed_texts(text))
    assert live.embed_texts(text).shape == (1, 6)


def test_a_served_version_leaves_the_collectors_view_and_the_version_it_replaced_is_freed():
    import gc
    import weakref

    repository, clock = MemoryRepository(), Clock()
    live = LiveCatalog(repository, "enc-1", check_interval=30, clock=clock)
    try:
        old = version("v1")
        object.__setattr__(old, "itself", old)  # a reference cycle: only the collector can free it
        repository.publish(old)
        clock.now = 31
        served = live.current()
        # Frozen: the collector's generations no longer hold what the served version holds.
        assert not any(candidate is served.item_ids for candidate in gc.get_objects())
        first = weakref.ref(served)
        del old, served
        repository.publish(version("v2"))
        del repository.versions["v1"]  # the repository's own reference
        clock.now = 62
        assert live.current().version == "v2"
        assert first() is None  # unfrozen and collected when the next version went into service
    finally:
        gc.unfreeze()
