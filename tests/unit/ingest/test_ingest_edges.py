"""Edges of the ingest pipeline that test_ingest_pipeline.py leaves open (found by mutation testing): what reaches
the dead-letter queue and with which reason, which records are retried when the dead-letter queue, the catalogue,
the encoder, the batch read or one user's write fails, the report's counts across users, the serving version's
learned settings, the writer pool's bound, and the log lines operators act on."""

import logging
import threading
import time

import pytest

from pulse.catalog.version import EmptyCatalog
from pulse.events.stream import StreamRecord
from pulse.ingest.pipeline import IngestPipeline
from pulse.interest.store import InMemoryInterestStore
from pulse.privacy import user_ref
from pulse.settings import IngestSettings
from tests.builders import behaviour, kinesis_record, sequence_number
from tests.unit.ingest import test_ingest_pipeline as base

parts = base.parts  # the in-memory store, real encoder, two-item catalogue and dead-letter queue
records, pipeline = base.records, base.pipeline


def logged(caplog, level):
    """(message, record) of the pulse.ingest.pipeline log records at exactly `level`."""
    return [(record.getMessage(), record) for record in caplog.records
            if record.name == "pulse.ingest.pipeline" and record.levelno == level]


class UnreachableCatalog(EmptyCatalog):
    """The catalogue store is down: every item lookup fails (and is counted)."""

    def __init__(self):
        self.lookups = []

    def embeddings_for(self, item_ids):
        self.lookups.append(set(item_ids))
        raise ConnectionError("injected: S3 unavailable")


def test_a_partition_key_mismatch_is_parked_with_the_full_instruction(parts):
    batch = [StreamRecord.from_lambda(kinesis_record(behaviour("e1", "alice", item_id="100"), 1,
                                                     partition_key="session-42"))]
    assert pipeline(parts).process(batch).rejected == 1
    assert parts["dead_letters"].messages[0]["reason"] == (
        "the record's partition key is not its user_id: put each event with PartitionKey = its user_id "
        "(in Unicode NFC form), so that a user's events stay in order")


class Unprintable(Exception):
    def __str__(self):
        raise ValueError("cannot print me")


@pytest.mark.parametrize(("error", "reason"), [
    (ValueError(), "ValueError"),  # no message: the type alone, no dangling ": "
    (ValueError("x" * 300), "ValueError: " + "x" * 200),  # the message's first 200 characters
    (Unprintable(), "Unprintable"),  # str() itself fails: the type alone
], ids=["empty message", "long message", "unprintable"])
def test_a_parser_surprise_is_parked_with_its_type_and_the_start_of_its_message(parts, monkeypatch, error, reason):
    import pulse.ingest.pipeline

    real = pulse.ingest.pipeline.parse_event

    def surprising(payload, limits=None):
        if payload.get("event_id") == "boom":
            raise error
        return real(payload, limits)

    monkeypatch.setattr(pulse.ingest.pipeline, "parse_event", surprising)
    report = pipeline(parts).process(records([behaviour("boom", "u", item_id="100"),
                                              behaviour("fine", "u", item_id="1")]))
    assert (report.accepted, report.rejected, report.failed_sequence_numbers) == (1, 1, [])
    (letter,) = parts["dead_letters"].messages
    assert letter["reason"] == f"the record could not be parsed: {reason}"


def test_a_clean_batch_does_not_depend_on_the_dead_letter_queue(parts):
    class DownQueue:
        def send(self, letters):
            raise ConnectionError("injected: SQS unavailable")

    parts["dead_letters"] = DownQueue()
    report = pipeline(parts).process(records([behaviour("a", "u", item_id="100")]))
    assert (report.accepted, report.rejected, report.failed_sequence_numbers) == (1, 0, [])


def test_records_the_queue_could_not_park_are_retried_not_counted_as_rejected(parts, caplog):
    class HalfFullQueue:
        """Parks the first letter of each call; the rest come back unparked."""

        def __init__(self):
            self.parked = []

        def send(self, letters):
            self.parked.extend(letters[:1])
            return list(letters[1:])

    parts["dead_letters"] = queue = HalfFullQueue()
    batch = records([b"not json", behaviour("ok", "u", item_id="100"), b"[1]", b"\xff"])
    report = pipeline(parts).process(batch)
    assert (report.accepted, report.rejected) == (1, 1)
    assert report.failed_sequence_numbers == [sequence_number(3), sequence_number(4)]
    assert [seq for seq, _ in report.rejections] == [sequence_number(n) for n in (1, 3, 4)]
    assert [letter.record.sequence_number for letter in queue.parked] == [sequence_number(1)]
    assert [message for message, _ in logged(caplog, logging.ERROR)] == [
        "could not park 2 invalid records in the dead-letter queue; they will be retried"]


def test_a_batch_without_item_events_does_not_ask_the_catalogue(parts, caplog):
    parts["catalog"] = catalog = UnreachableCatalog()
    report = pipeline(parts).process(records([behaviour("a", "u", type="search", text="coen brothers")]))
    assert (report.accepted, report.failed_sequence_numbers) == (1, [])
    assert catalog.lookups == [] and logged(caplog, logging.ERROR) == []


def test_a_catalogue_outage_is_logged_with_its_traceback_and_its_item_events_retried(parts, caplog):
    parts["catalog"] = catalog = UnreachableCatalog()
    report = pipeline(parts).process(records([behaviour("a", "u", item_id="100")]))
    assert report.failed_sequence_numbers == [sequence_number(1)] and catalog.lookups == [{"100"}]
    ((message, record),) = logged(caplog, logging.ERROR)
    assert message == "catalogue lookup failed; item events of this batch will be retried"
    assert record.exc_info[0] is ConnectionError


def test_texts_embedded_counts_the_texts_sent_to_the_encoder(parts):
    report = pipeline(parts).process(records([behaviour("a", "u1", type="search", text="crime"),
                                              behaviour("b", "u2", item_id="100"),
                                              behaviour("c", "u3", item_id="unknown", text="A new film")]))
    assert (report.accepted, report.texts_embedded) == (3, 2)


def test_an_encoder_answering_fewer_vectors_than_texts_retries_every_text_event(parts, caplog):
    """zip(strict=True) raises only after yielding the pairs it has: the first text's vector is already taken
    when the error comes, and only the hold-back from a user's first retried record keeps it from being applied
    (and reported as failed at once)."""
    class ShortEncoder:
        def encode(self, texts):
            return parts["encoder"].encode(texts)[:-1]

    ingest = IngestPipeline(parts["store"], ShortEncoder, parts["catalog"], parts["dead_letters"], IngestSettings())
    report = ingest.process(records([behaviour("a", "u1", type="search", text="crime"),
                                     behaviour("b", "u2", type="search", text="comedy"),
                                     behaviour("c", "u3", item_id="100")]))
    assert report.failed_sequence_numbers == [sequence_number(1), sequence_number(2)]
    assert (report.accepted, report.texts_embedded) == (1, 0)
    assert parts["store"].get("u1") is None and parts["store"].get("u2") is None
    ((message, record),) = logged(caplog, logging.ERROR)
    assert message == "encoder failed; 2 text events of this batch will be retried"
    assert record.exc_info[0] is ValueError  # zip(strict=True): a missing vector is an error, not a dropped event


def test_the_interest_follows_the_half_lives_the_serving_version_learned(parts):
    class LearnedCatalog(EmptyCatalog):
        def learned_settings(self):
            return {"half_lives": {"fortnight": 14 * 86400.0}}

    parts["catalog"] = LearnedCatalog()
    pipeline(parts).process(records([behaviour("a", "u", type="search", text="crime")]))
    assert set(parts["store"].get("u").scales) == {"fortnight"}


def test_a_retry_holds_back_the_users_records_from_the_first_failed_one_on(parts):
    """Two item events of u1 fail (catalogue down): the text event between them waits for the first."""
    parts["catalog"] = UnreachableCatalog()
    batch = records([behaviour("a", "u1", item_id="100", ts=10),
                     behaviour("b", "u1", type="search", text="between the failures", ts=20),
                     behaviour("c", "u1", item_id="1", ts=30),
                     behaviour("d", "u2", type="search", text="another user", ts=40)])
    report = pipeline(parts).process(batch)
    assert report.failed_sequence_numbers == [sequence_number(n) for n in (1, 2, 3)]
    assert parts["store"].get("u1") is None and parts["store"].get("u2").event_count == 1


def test_when_the_batch_read_fails_each_user_is_read_and_written_on_its_own(parts, caplog):
    store = parts["store"]
    pipeline(parts).process(records([behaviour("a", "u1", item_id="100", ts=10)]))

    def refuse(user_ids):
        raise ConnectionError("injected: BatchGetItem throttled")

    store.get_many = refuse
    report = pipeline(parts).process(records([behaviour("b", "u1", item_id="1", ts=20),
                                              behaviour("c", "u2", item_id="1", ts=30)], first_sequence=2))
    assert (report.accepted, report.user_writes, report.failed_sequence_numbers) == (2, 2, [])
    assert (store.get("u1").event_count, store.get("u2").event_count) == (2, 1)
    ((message, record),) = logged(caplog, logging.WARNING)
    assert message == "batch read of the users failed; reading them one by one"
    assert record.exc_info[0] is ConnectionError


def test_a_failed_write_is_logged_by_user_reference_and_retries_only_that_users_records(parts, caplog):
    store = parts["store"]
    real_update = store.update

    def update(user_id, mutate, known):
        if user_id == "failing-user":
            raise ConnectionError("injected: DynamoDB unavailable")
        return real_update(user_id, mutate, known=known)

    store.update = update
    report = pipeline(parts).process(records([behaviour("a", "failing-user", item_id="100"),
                                              behaviour("b", "other-user", item_id="100"),
                                              behaviour("c", "failing-user", item_id="1")]))
    assert report.failed_sequence_numbers == [sequence_number(1), sequence_number(3)]
    assert (report.accepted, store.get("other-user").event_count, store.get("failing-user")) == (1, 1, None)
    ((message, record),) = logged(caplog, logging.ERROR)
    assert message == "writing a user's interest failed; their records of this batch will be retried"
    assert record.user == user_ref("failing-user") and record.exc_info[0] is ConnectionError


def test_redelivered_records_are_counted_over_all_users(parts):
    batch = records([behaviour(f"e{n}", f"u{n % 2}", item_id="100", ts=100 + n) for n in range(5)])
    assert pipeline(parts).process(batch).accepted == 5
    again = pipeline(parts).process(batch)
    assert (again.accepted, again.redelivered, again.user_writes) == (0, 5, 0)


def test_events_of_deleted_users_are_counted_over_all_users_and_logged_by_reference(parts, caplog):
    caplog.set_level(logging.INFO, logger="pulse.ingest.pipeline")
    parts["store"] = store = InMemoryInterestStore(clock=lambda: 1_800_000_000.0)
    for user_id in ("gone-alice", "gone-bob"):
        store.delete(user_id)
    batch = records([behaviour("a", "gone-alice", item_id="100"), behaviour("b", "gone-bob", item_id="100"),
                     behaviour("c", "gone-alice", item_id="1")])
    report = pipeline(parts).process(batch)
    assert (report.accepted, report.forgotten, report.failed_sequence_numbers) == (0, 3, [])
    assert sorted((message, record.user) for message, record in logged(caplog, logging.INFO)) == sorted([
        ("ignored 2 events of a deleted user dated at or before the deletion", user_ref("gone-alice")),
        ("ignored 1 events of a deleted user dated at or before the deletion", user_ref("gone-bob"))])


def test_user_writes_run_on_at_most_write_concurrency_pulse_write_threads(parts):
    store = parts["store"]
    real_update = store.update
    lock, running, most, threads = threading.Lock(), [0], [0], set()

    def slow_update(user_id, mutate, known):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough for any free worker to pick up the next user meanwhile
        with lock:
            running[0] -= 1
        return real_update(user_id, mutate, known=known)

    store.update = slow_update
    settings = IngestSettings(write_concurrency=2)
    report = pipeline(parts, settings).process(records([behaviour(f"e{n}", f"u{n}", item_id="100")
                                                         for n in range(6)]))
    assert report.user_writes == 6
    assert most[0] <= 2
    # The prefix names the pool's threads in thread dumps and in log records (threadName).
    assert threads and all(name.startswith("pulse-write_") for name in threads)
