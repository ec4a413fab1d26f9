"""The ingest pipeline with in-memory stores: catalogue vs text embeddings, aggregation, fault handling."""

import json
from dataclasses import replace

import numpy as np
import pytest

from pulse.catalog import EmptyCatalog, in_memory_catalog
from pulse.dead_letters import InMemoryDeadLetters
from pulse.ingest import IngestPipeline
from pulse.recommend import scale_vectors
from pulse.settings import Settings
from pulse.store import InMemoryInterestStore
from pulse.stream import StreamRecord
from tests.builders import behaviour, kinesis_event, sequence_number


def records(payloads, first_sequence=1):
    return [StreamRecord.from_lambda(r) for r in kinesis_event(payloads, first_sequence=first_sequence)["Records"]]


class CountingEncoder:
    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self.encoder.encode(texts)


@pytest.fixture
def parts(encoder):
    catalog_vectors = encoder.encode(["Fargo (1996) Crime Drama Thriller", "Toy Story (1995) Animation Comedy"])
    return {
        "store": InMemoryInterestStore(),
        "encoder": CountingEncoder(encoder),
        "catalog": in_memory_catalog(["100", "1"], catalog_vectors),
        "dead_letters": InMemoryDeadLetters(),
    }


def pipeline(parts, settings=None):
    return IngestPipeline(parts["store"], lambda: parts["encoder"], parts["catalog"], parts["dead_letters"],
                          settings or Settings())


def test_catalogue_items_need_no_encoder_and_texts_share_one_batched_call(parts):
    batch = records([
        behaviour("a", "u1", item_id="100"),
        behaviour("b", "u2", item_id="1", text="ignored: the catalogue vector wins"),
        behaviour("c", "u1", type="search", text="coen brothers crime"),
        behaviour("d", "u3", item_id="new-item", text="A Bug's Life (1998) Animation"),
    ])
    report = pipeline(parts).process(batch)
    assert (report.accepted, report.rejected, report.failed_sequence_numbers) == (4, 0, [])
    assert parts["encoder"].calls == [["coen brothers crime", "A Bug's Life (1998) Animation"]]
    u2 = parts["store"].get("u2")
    assert [(entry.item_id, entry.type) for entry in u2.history] == [("1", "view")] and u2.scales == {}
    long = scale_vectors(u2, parts["catalog"], 0.0, Settings().half_lives)["long"]
    np.testing.assert_allclose(long, 0.5 * parts["catalog"].embeddings[1], atol=1e-6)
    u3 = parts["store"].get("u3")  # an item the catalogue does not know: its text stands for it, in text space
    assert u3.history == [] and list(u3.recent_items) == ["new-item"]
    np.testing.assert_allclose(u3.scales["long"].vector, 0.5 * parts["encoder"].encode(
        ["A Bug's Life (1998) Animation"])[0], atol=1e-6)


def test_one_write_per_user_per_batch(parts):
    batch = records([behaviour(f"e{i}", f"u{i % 3}", item_id="100", ts=1000 + i) for i in range(30)])
    report = pipeline(parts).process(batch)
    assert report.user_writes == parts["store"].writes == 3
    assert {parts["store"].get(f"u{i}").event_count for i in range(3)} == {10}


def test_the_users_of_a_batch_are_read_together_then_written_one_by_one(parts):
    store = parts["store"]
    reads = {"get": 0, "get_many": []}
    real_get, real_get_many = store.get, store.get_many
    store.get = lambda user_id: reads.__setitem__("get", reads["get"] + 1) or real_get(user_id)
    store.get_many = lambda user_ids: reads["get_many"].append(sorted(user_ids)) or real_get_many(user_ids)
    for first in (0, 30):  # new users, then known ones
        batch = records([behaviour(f"e{i}", f"u{i % 3}", item_id="100", ts=1000 + i) for i in range(first, first + 30)],
                        first_sequence=first + 1)
        pipeline(parts).process(batch)
    assert reads == {"get": 0, "get_many": [["u0", "u1", "u2"]] * 2}
    assert {store.get(f"u{i}").event_count for i in range(3)} == {20} and store.writes == 6


def test_the_encoder_is_loaded_only_when_a_batch_has_texts(parts):
    loads = []

    def loader():
        loads.append(1)
        return parts["encoder"]

    ingest = IngestPipeline(parts["store"], loader, parts["catalog"], parts["dead_letters"], Settings())
    ingest.process(records([behaviour("a", "u", item_id="100")]))
    assert loads == []
    ingest.process(records([behaviour("b", "u", text="anything")], first_sequence=2))
    ingest.process(records([behaviour("c", "u", text="again")], first_sequence=3))
    assert loads == [1]


def test_unknown_items_without_text_are_rejected_until_a_catalogue_knows_them(parts):
    parts["catalog"] = EmptyCatalog()
    report = pipeline(parts).process(records([behaviour("a", "u", item_id="100")]))
    assert (report.accepted, report.rejected) == (0, 1)
    (letter,) = parts["dead_letters"].messages
    assert letter["reason"] == "item_id '100' is not in the catalogue and the event has no text to embed"
    assert letter["payload"]["event_id"] == "a"


def test_a_transient_failure_holds_back_that_users_later_records_only(parts):
    class FailingCatalog:
        def embeddings_for(self, item_ids):
            raise ConnectionError("injected: S3 unavailable")

        def embed_texts(self, text_vectors):
            return text_vectors

        def text_vectors_for(self, item_ids):
            raise ConnectionError("injected: S3 unavailable")

        def learned_settings(self):
            raise ConnectionError("injected: S3 unavailable")

    parts["catalog"] = FailingCatalog()
    batch = records([
        behaviour("a", "u1", text="first text event", ts=10),
        behaviour("b", "u1", item_id="100", ts=20),  # needs the catalogue: retried
        behaviour("c", "u1", text="after the failure", ts=30),  # held back: the watermark must not pass b
        behaviour("d", "u2", text="another user", ts=40),
    ])
    report = pipeline(parts).process(batch)
    assert report.failed_sequence_numbers == [sequence_number(2), sequence_number(3)]
    assert parts["store"].get("u1").event_count == 1
    assert parts["store"].get("u2").event_count == 1


def test_an_item_event_whose_catalogue_lookup_failed_is_retried_not_applied_as_its_text(parts):
    class UnreachableCatalog(EmptyCatalog):
        def embeddings_for(self, item_ids):
            raise ConnectionError("injected: S3 unavailable")

    parts["catalog"] = UnreachableCatalog()
    report = pipeline(parts).process(records([behaviour("a", "u1", item_id="100", text="Fargo (1996) Crime")]))
    assert report.failed_sequence_numbers == [sequence_number(1)] and report.texts_embedded == 0
    assert parts["store"].get("u1") is None and parts["dead_letters"].messages == []


def test_weights_follow_the_type_and_rating(parts):
    batch = records([behaviour("a", "fan", type="rate", item_id="100", value=5),
                     behaviour("b", "hater", type="rate", item_id="100", value=1)])
    pipeline(parts).process(batch)
    fan, hater = (scale_vectors(parts["store"].get(user), parts["catalog"], 0.0, Settings().half_lives,
                                Settings().type_weights)["long"] for user in ("fan", "hater"))
    assert float(fan @ hater) < 0


def test_history_keeps_the_newest_item_events_and_folds_the_rest_by_their_text(parts):
    """What leaves the history is not lost: its text vector joins the residual, so the state still sums every
    event (here exactly, since a text-only catalogue's rows are the text vectors)."""
    settings = replace(Settings(), history_limit=2)
    batch = records([behaviour(f"e{n}", "u", item_id=item, ts=100 + n)
                     for n, item in enumerate(["100", "1", "100", "1"])])
    pipeline(parts, settings).process(batch)
    user = parts["store"].get("u")
    assert [(entry.ts, entry.item_id) for entry in user.history] == [(102.0, "100"), (103.0, "1")]
    vectors = scale_vectors(user, parts["catalog"], 200.0, settings.half_lives)
    rows = parts["catalog"].embeddings.astype(np.float64)
    for name, half_life in settings.half_lives.items():
        expected = sum(0.5 * 2 ** (-(200.0 - (100 + n)) / half_life) * rows[row] for n, row in enumerate([0, 1, 0, 1]))
        np.testing.assert_allclose(vectors[name], expected, atol=1e-6)


def test_dead_letters_keep_undecodable_bytes(parts):
    pipeline(parts).process(records([b"\xff\xfe binary", json.dumps([1, 2])]))
    first, second = parts["dead_letters"].messages
    assert first["payload"] is None and first["reason"].startswith("record data is not valid UTF-8")
    assert second["payload"] == [1, 2]
