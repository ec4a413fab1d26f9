"""The ingest pipeline with in-memory stores: catalogue vs text embeddings, aggregation, fault handling."""

import json

import numpy as np
import pytest

from pulse.catalog.version import EmptyCatalog, in_memory_catalog
from pulse.events.dead_letters import InMemoryDeadLetters
from pulse.events.stream import StreamRecord
from pulse.ingest.pipeline import IngestPipeline
from pulse.interest.store import InMemoryInterestStore
from pulse.serving.recommend import scale_vectors
from pulse.settings import IngestSettings, Settings
from tests.builders import behaviour, kinesis_event, kinesis_record, sequence_number


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
                          settings or IngestSettings())


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

    ingest = IngestPipeline(parts["store"], loader, parts["catalog"], parts["dead_letters"], IngestSettings())
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
    settings = IngestSettings(history_limit=2)
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


def test_an_event_dated_beyond_the_clock_skew_is_parked_with_the_reason(parts):
    """One view dated a year ahead would rule the user's interest for that year: it never reaches the state."""
    now = 1_700_000_000.0
    batch = records([behaviour("ahead", "u", item_id="100", ts=now + 365 * 86400),
                     behaviour("late", "u", item_id="1", ts=881250949),  # 1997: no age limit by default
                     behaviour("fine", "u", item_id="1", ts=now + 60)])
    report = IngestPipeline(parts["store"], lambda: parts["encoder"], parts["catalog"], parts["dead_letters"],
                            IngestSettings(), clock=lambda: now).process(batch)
    assert (report.accepted, report.rejected) == (2, 1)
    (letter,) = parts["dead_letters"].messages
    assert letter["reason"] == ("ts 1731536000.0 is 31536000 s in the future; the limit is 300 s "
                                "(PULSE_MAX_CLOCK_SKEW_SECONDS)")
    assert parts["store"].get("u").last_event_ts == now + 60

    aged = IngestPipeline(parts["store"], lambda: parts["encoder"], parts["catalog"], parts["dead_letters"],
                          IngestSettings(max_event_age_days=7), clock=lambda: now)
    assert aged.process(records([behaviour("old", "v", item_id="1", ts=881250949)])).rejected == 1
    assert "days old; the limit is 7 days (PULSE_MAX_EVENT_AGE_DAYS)" in parts["dead_letters"].messages[-1]["reason"]


def test_any_exception_while_parsing_one_record_parks_it_and_the_batch_goes_on(parts, monkeypatch):
    """A ts of 5,000 digits used to crash the batch (Python refuses to convert such an integer) instead of
    reaching the dead-letter queue; so would any surprise of the parser."""
    huge = b'{"event_id": "e", "user_id": "u", "type": "view", "item_id": "100", "ts": 1' + b"0" * 5000 + b"}"
    report = pipeline(parts).process(records([huge, behaviour("ok", "u", item_id="100")]))
    assert (report.accepted, report.rejected, report.failed_sequence_numbers) == (1, 1, [])
    assert "Exceeds the limit (4300 digits)" in parts["dead_letters"].messages[0]["reason"]
    assert parts["dead_letters"].messages[0]["data_base64"]

    import pulse.ingest.pipeline

    real = pulse.ingest.pipeline.parse_event

    def surprising(payload, limits=None):
        if payload.get("event_id") == "boom":
            raise KeyError("a parser bug")
        return real(payload, limits)

    monkeypatch.setattr(pulse.ingest.pipeline, "parse_event", surprising)
    report = pipeline(parts).process(records([behaviour("boom", "u", item_id="100"),
                                              behaviour("after", "u", item_id="1")], first_sequence=10))
    assert (report.accepted, report.rejected, report.failed_sequence_numbers) == (1, 1, [])
    assert parts["dead_letters"].messages[-1]["reason"] == "the record could not be parsed: KeyError: 'a parser bug'"


def test_a_record_whose_partition_key_is_not_its_user_id_is_parked_not_dropped_as_redelivered(parts):
    """The per-shard watermark assumes a user's records are in order: with another partition key, two batches of
    one shard may run in parallel (ParallelizationFactor > 1), and a later record applied first used to make the
    earlier one look redelivered."""
    batch = [StreamRecord.from_lambda(kinesis_record(behaviour("e1", "alice", item_id="100"), 1,
                                                     partition_key="session-42")),
             StreamRecord.from_lambda(kinesis_record(behaviour("e2", "alice", item_id="1"), 2))]
    report = pipeline(parts).process(batch)
    assert (report.accepted, report.rejected, report.redelivered) == (1, 1, 0)
    assert parts["dead_letters"].messages[0]["reason"].startswith(
        "the record's partition key is not its user_id: put each event with PartitionKey = its user_id")
    decomposed = behaviour("e3", "jose\u0301", item_id="100")  # NFC "josé" is the user; the key must be that
    report = pipeline(parts).process([StreamRecord.from_lambda(kinesis_record(decomposed, 3,
                                                                              partition_key="jos\u00e9"))])
    assert report.accepted == 1 and parts["store"].get("jos\u00e9").event_count == 1


def test_a_pretty_printed_record_is_applied_like_any_json(parts):
    pretty = json.dumps(behaviour("e1", "u", item_id="100"), indent=2)
    report = pipeline(parts).process([StreamRecord.from_lambda(kinesis_record(pretty, 1, partition_key="u"))])
    assert report.accepted == 1 and not parts["dead_letters"].messages
