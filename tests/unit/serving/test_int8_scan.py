"""The API's int8 scan: integer products by onnxruntime, a shortlist rescored in float32, rows memory-mapped."""

import logging

import numpy as np
import pytest

from pulse.catalog.int8 import ZERO_POINT, quantize_query, quantize_rows
from pulse.catalog.store import LiveCatalog
from pulse.catalog.version import in_memory_catalog
from pulse.interest.model import ScaleState, UserInterest
from pulse.serving import int8_scan
from pulse.serving.int8_scan import IntegerMatVec, prepare_for_serving, shortlist_size
from pulse.serving.recommend import best_rows, recommend, similar_items
from tests.unit.catalog.test_catalog import MemoryRepository

HALF_LIVES = {"short": 1800.0}


def unit_rows(count, dim, seed=0, clusters=0):
    """Random unit rows; with `clusters`, rows bunched around a few centres (many near-equal scores)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(count, dim))
    if clusters:
        centres = rng.normal(size=(clusters, dim)) * 3
        rows += centres[rng.integers(0, clusters, count)]
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def scanned(catalog):
    """The same version, prepared as the API serves it (a copy: the float32 path stays available to compare)."""
    copy = in_memory_catalog(catalog.item_ids, catalog.embeddings.copy(), available=catalog.available,
                             titles=catalog.titles)
    assert prepare_for_serving(copy).scan is not None
    return copy


def test_the_kernel_computes_the_exact_integer_products():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, size=(1000, 48), dtype=np.uint8)
    query = rng.integers(-127, 128, size=48, dtype=np.int8)
    expected = (codes.astype(np.int64) - ZERO_POINT) @ query.astype(np.int64)
    assert np.array_equal(IntegerMatVec(48)(codes, query), expected)


def test_a_quantized_row_is_within_half_a_step_of_the_original_and_a_zero_row_stays_zero():
    rows = np.vstack([unit_rows(300, 32), np.zeros((1, 32), np.float32), 1e30 * unit_rows(1, 32, seed=2)])
    codes, scales = quantize_rows(rows)
    decoded = (codes.astype(np.float64) - ZERO_POINT) * scales[:, None]
    assert np.all(np.abs(decoded - rows) <= scales[:, None] * 0.5 * (1 + 1e-5))
    assert np.all(codes[300] == ZERO_POINT) and scales[300] == 1.0
    assert codes.dtype == np.uint8 and codes.min() >= 1  # -127 .. 127: symmetric, 0 is never used
    query, scale = quantize_query(rows[0])
    assert np.all(np.abs(query * scale - rows[0]) <= scale * 0.5 * (1 + 1e-5))


def test_real_text_embeddings_keep_the_float32_top_10(encoder):
    """MovieLens titles through the real encoder: sequels and remakes make many near-equal scores."""
    from pulse_dev.movielens import load_movies

    movies = load_movies()
    catalog = in_memory_catalog([movie.item_id for movie in movies],
                                encoder.encode([movie.display_title for movie in movies]))
    served = scanned(catalog)
    rng = np.random.default_rng(3)
    everything = np.ones(len(catalog), dtype=bool)
    found = 0
    queries = [catalog.embeddings[rng.choice(len(catalog), 3, replace=False)].sum(axis=0) for _ in range(200)]
    for query in queries:
        query = (query / np.linalg.norm(query)).astype(np.float32)
        exact_rows, exact_scores = best_rows(catalog, query, everything, 10)
        rows, scores = best_rows(served, query, everything, 10)
        found += len(set(rows) & set(exact_rows))
        exact_of = dict(zip(exact_rows, exact_scores, strict=True))
        assert all(abs(score - exact_of[row]) <= 1e-6 for row, score in zip(rows, scores, strict=True)
                   if row in exact_of)  # the float32 scores, up to the order of summation
    assert found / (10 * len(queries)) >= 0.99


@pytest.mark.parametrize("clusters", [0, 8])
def test_recommendations_similar_items_and_filters_answer_as_the_float32_path(clusters):
    rows = unit_rows(3000, 64, seed=clusters, clusters=clusters)
    available = np.ones(3000, dtype=bool)
    available[::7] = False
    catalog = in_memory_catalog([f"i{n}" for n in range(3000)], rows, available=available)
    served = scanned(catalog)
    rng = np.random.default_rng(4)
    for _ in range(30):
        vector = rows[rng.choice(3000, 4, replace=False)].sum(axis=0).astype(np.float64)
        seen = {f"i{n}": 0.0 for n in rng.choice(3000, 40, replace=False)}
        user = UserInterest("u", scales={"short": ScaleState(vector, 0.0)}, recent_items=seen)
        plain, fast = (recommend(version, user, k=10, at=0.0, half_lives=HALF_LIVES, blend_weights={"short": 1.0})
                       for version in (catalog, served))
        assert fast == plain
        assert not {item.item_id for item in fast.items} & set(seen)
        assert all(available[int(item.item_id[1:])] for item in fast.items)
        item = f"i{rng.integers(3000)}"
        assert similar_items(served, item, 20) == similar_items(catalog, item, 20)


def test_a_prior_added_to_the_scores_is_added_to_the_shortlist_too():
    rows = unit_rows(2000, 32, seed=5)
    catalog, served = (lambda c: (c, scanned(c)))(in_memory_catalog([str(n) for n in range(2000)], rows))
    prior = np.zeros(2000, dtype=np.float32)
    prior[[17, 900, 1999]] = 5.0  # far above any cosine: these three lead
    query = rows[3]
    allowed = np.ones(2000, dtype=bool)
    plain_rows, plain_scores = best_rows(catalog, query, allowed, 10, prior)
    rows_found, scores = best_rows(served, query, allowed, 10, prior)
    assert list(rows_found[:3]) == sorted([17, 900, 1999], key=lambda row: -(rows[row] @ query))
    assert np.array_equal(rows_found, plain_rows) and np.array_equal(scores, plain_scores)


def test_a_small_catalogue_is_scored_in_float32_whole(monkeypatch):
    catalog = in_memory_catalog([str(n) for n in range(50)], unit_rows(50, 16))
    served = scanned(catalog)
    assert len(served) <= shortlist_size(10)

    def no_scan(self, query):
        raise AssertionError("a catalogue no larger than the shortlist is not scanned")

    monkeypatch.setattr(int8_scan.Int8Scan, "scores", no_scan)
    allowed = np.ones(50, dtype=bool)
    assert all(np.array_equal(a, b) for a, b in zip(best_rows(served, catalog.embeddings[0], allowed, 10),
                                                     best_rows(catalog, catalog.embeddings[0], allowed, 10),
                                                     strict=True))


def test_serving_keeps_the_codes_in_memory_and_maps_the_float32_rows_from_disk():
    rows = unit_rows(5000, 384, seed=6)
    version = in_memory_catalog([str(n) for n in range(5000)], rows.copy())
    prepared = prepare_for_serving(version)
    scan = prepared.scan
    assert scan.nbytes / 5000 == 384 + 4  # uint8 codes and a float32 scale per item
    assert not prepared.embeddings.flags.owndata and not prepared.embeddings.flags.writeable
    assert isinstance(prepared.embeddings, np.ndarray) and type(prepared.embeddings) is np.ndarray
    assert np.array_equal(prepared.embeddings, rows)
    assert prepare_for_serving(prepared).scan is scan  # once per version


def test_without_room_on_disk_the_float32_rows_stay_in_memory(monkeypatch, caplog):
    class Full:
        free = 0

    monkeypatch.setattr(int8_scan.shutil, "disk_usage", lambda folder: Full())
    version = prepare_for_serving(in_memory_catalog([str(n) for n in range(500)], unit_rows(500, 16)))
    assert version.scan is not None and version.embeddings.flags.owndata
    assert "no room" in caplog.text


def test_without_onnxruntime_the_version_serves_in_float32(monkeypatch):
    monkeypatch.setattr(int8_scan.importlib.util, "find_spec", lambda name: None)
    version = in_memory_catalog([str(n) for n in range(500)], unit_rows(500, 16))
    assert prepare_for_serving(version).scan is None and version.embeddings.flags.owndata


def test_a_failed_preparation_still_serves_the_version_and_says_why(caplog):
    repository = MemoryRepository()
    repository.publish(in_memory_catalog(["a", "b"], unit_rows(2, 8), fingerprint="enc-1"))
    live = LiveCatalog(repository, "enc-1", check_interval=0)

    def broken(version):
        raise MemoryError("injected")

    live.prepare_with(broken)
    with caplog.at_level(logging.ERROR):
        assert live.current().version == repository.current and live.current().scan is None
    assert "preparing catalogue" in caplog.text and "injected" in caplog.text


def test_the_version_already_serving_is_prepared_when_the_api_asks():
    repository = MemoryRepository()
    repository.publish(in_memory_catalog([str(n) for n in range(300)], unit_rows(300, 16), fingerprint="enc-1"))
    live = LiveCatalog(repository, "enc-1", check_interval=30)
    assert live.current().scan is None
    live.prepare_with(prepare_for_serving)
    assert live.current().scan is not None and repository.loads == 1


def test_the_scan_answers_nothing_for_no_k_or_no_direction_and_at_most_the_allowed_rows():
    rows = unit_rows(2000, 16, seed=7)
    catalog = in_memory_catalog([str(n) for n in range(2000)], rows)
    served = scanned(catalog)
    everything = np.ones(2000, dtype=bool)
    for version in (catalog, served):
        for k, query in ((0, rows[0]), (-5, rows[0]), (10, np.full(16, np.nan, dtype=np.float32))):
            found, scores = best_rows(version, query, everything, k)
            assert len(found) == 0 and len(scores) == 0
    three = np.zeros(2000, dtype=bool)
    three[[5, 500, 1500]] = True
    found, _ = best_rows(served, rows[0], three, 10)
    assert sorted(found) == [5, 500, 1500]


def test_a_replaced_version_never_carries_codes_over_to_other_rows():
    from dataclasses import replace

    version = in_memory_catalog([str(n) for n in range(300)], unit_rows(300, 16))
    object.__setattr__(version, "quantized", quantize_rows(version.embeddings))
    assert replace(version, embeddings=unit_rows(300, 16, seed=9)).quantized is None
