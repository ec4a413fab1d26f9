"""The write path: a batch of Kinesis records becomes decayed interest, exactly once.

validate -> embed (catalogue vectors for known items, one batched encoder call for texts) -> group by
user -> one conditional write per user -> invalid records to the dead-letter queue. A record that can
never succeed is parked and does not fail the batch; a record that failed for a passing reason (encoder,
catalogue, DynamoDB, SQS) is reported so Lambda retries from it, and re-application is a no-op.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from pulse.catalog.version import CatalogReader
from pulse.events.behaviour import BehaviourEvent, InvalidEventError, TimeLimits, decode_record_data, parse_event
from pulse.events.dead_letters import DeadLetter, DeadLetterSink
from pulse.events.stream import StreamRecord
from pulse.interest.model import ApplyResult, EmbeddedEvent, UserInterest, apply_user_events
from pulse.interest.store import UNKNOWN, InterestStore
from pulse.privacy import user_ref
from pulse.settings import IngestSettings, Settings

log = logging.getLogger(__name__)


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> NDArray[Any]: ...


@dataclass(slots=True)
class IngestReport:
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    redelivered: int = 0
    forgotten: int = 0  # events of deleted users dated at or before the deletion: ignored, not parked
    user_writes: int = 0
    failed_sequence_numbers: list[str] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (sequence number, reason)
    texts_embedded: int = 0


@dataclass(frozen=True, slots=True)
class _Pending:
    record: StreamRecord
    event: BehaviourEvent


def parse_record(record: StreamRecord, limits: TimeLimits | None) -> BehaviourEvent:
    """The record's event; its partition key must be its user_id: a user's records then stay in order on one
    shard, which the per-shard watermark relies on (else a later record applied first hides an earlier one)."""
    event = parse_event(decode_record_data(record.data), limits)
    if record.partition_key != event.user_id:
        raise InvalidEventError("the record's partition key is not its user_id: put each event with PartitionKey = "
                           "its user_id (in Unicode NFC form), so that a user's events stay in order")
    return event


def describe(error: BaseException) -> str:
    """The exception's type and the start of its message (never a crash of its own)."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print
        message = ""
    return f"{type(error).__name__}: {message[:200]}" if message else type(error).__name__


class IngestPipeline:
    def __init__(self, store: InterestStore, load_embedder: Callable[[], Embedder], catalog: CatalogReader,
                 dead_letters: DeadLetterSink, settings: IngestSettings, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.store = store
        self._load_embedder = load_embedder
        self._embedder: Embedder | None = None
        self.catalog = catalog
        self.dead_letters = dead_letters
        self.settings = settings
        self._writers = ThreadPoolExecutor(max_workers=settings.write_concurrency, thread_name_prefix="pulse-write")

    def process(self, records: Sequence[StreamRecord]) -> IngestReport:
        report = IngestReport(records=len(records))
        failed: set[str] = set()
        letters: list[DeadLetter] = []
        valid: list[_Pending] = []
        limits = self.settings.time_limits(self.clock())
        for record in records:
            try:
                valid.append(_Pending(record, parse_record(record, limits)))
            except InvalidEventError as error:
                letters.append(DeadLetter(str(error), record))
            except Exception as error:  # noqa: BLE001 - one record's surprise must not stall the shard
                letters.append(DeadLetter(f"the record could not be parsed: {describe(error)}", record))

        settings = self._serving_settings()
        embedded, unknown, not_embedded = self._embed(valid, report, settings)
        letters.extend(unknown)
        failed.update(pending.record.sequence_number for pending in not_embedded)

        self._write_users(embedded, not_embedded, report, failed, settings)

        for letter in letters:
            report.rejections.append((letter.record.sequence_number, letter.reason))
        unparked = self.dead_letters.send(letters) if letters else []
        if unparked:
            log.error("could not park %d invalid records in the dead-letter queue; they will be retried",
                      len(unparked))
        failed.update(letter.record.sequence_number for letter in unparked)
        report.rejected = len(letters) - len(unparked)
        report.failed_sequence_numbers = [r.sequence_number for r in records if r.sequence_number in failed]
        return report

    def _embed(self, valid: Sequence[_Pending], report: IngestReport, settings: Settings
               ) -> tuple[list[tuple[_Pending, EmbeddedEvent]], list[DeadLetter], list[_Pending]]:
        """-> (embedded events, unknown items without text, events that failed for a passing reason)."""
        item_ids = {pending.event.item_id for pending in valid if pending.event.item_id is not None}
        not_embedded: list[_Pending] = []
        try:
            known = self.catalog.embeddings_for(item_ids) if item_ids else {}
        except Exception:  # noqa: BLE001 - the catalogue store is down: retry these records later
            log.exception("catalogue lookup failed; item events of this batch will be retried")
            known = None
        vectors: dict[int, NDArray[np.float64] | None] = {}
        needs_text: dict[int, str] = {}  # valid's index -> the text to embed
        letters: list[DeadLetter] = []
        for index, pending in enumerate(valid):
            event = pending.event
            if event.item_id is not None and known is not None and event.item_id in known:
                vectors[index] = None  # a catalogue item: the history keeps it, embedded when asked
            elif event.item_id is not None and known is None:
                not_embedded.append(pending)  # the lookup failed: retried, its text must not stand in for it
            elif event.text is not None:
                needs_text[index] = event.text
            else:
                letters.append(DeadLetter(f"item_id '{event.item_id}' is not in the catalogue and the event "
                                          "has no text to embed", pending.record))
        if needs_text:
            try:
                encoded = self.embedder.encode(list(needs_text.values()))
                vectors.update(zip(needs_text, np.asarray(encoded, dtype=np.float64), strict=True))
                report.texts_embedded += len(needs_text)
            except Exception:  # noqa: BLE001 - the encoder failed: retry these records later
                log.exception("encoder failed; %d text events of this batch will be retried", len(needs_text))
                not_embedded.extend(valid[index] for index in needs_text)
        weights = settings.type_weights
        embedded = [(valid[index], EmbeddedEvent(valid[index].event, valid[index].record.position,
                                                 weights.weight(valid[index].event), vector))
                    for index, vector in sorted(vectors.items())]
        return embedded, letters, not_embedded

    def _serving_settings(self) -> IngestSettings:
        """The configured settings with what the serving catalogue version learned (unless pinned)."""
        try:
            return self.settings.serving(self.catalog.learned_settings())
        except Exception:  # noqa: BLE001 - the catalogue store is down: the item lookups report it
            return self.settings

    def _write_users(self, embedded: Sequence[tuple[_Pending, EmbeddedEvent]], not_embedded: Sequence[_Pending],
                     report: IngestReport, failed: set[str], serving: Settings) -> None:
        by_user: dict[str, list[tuple[_Pending, EmbeddedEvent]]] = defaultdict(list)
        for pending, item in embedded:
            by_user[pending.event.user_id].append((pending, item))
        # A user's records after one that must be retried wait for that retry: the stream's applied
        # sequence number may only move past records that are really applied.
        first_retry: dict[str, int] = {}
        for pending in not_embedded:
            seq = int(pending.record.sequence_number)
            first_retry[pending.event.user_id] = min(seq, first_retry.get(pending.event.user_id, seq))

        def write(user_id: str, items: list[tuple[_Pending, EmbeddedEvent]]) -> ApplyResult:
            cutoff = first_retry.get(user_id)
            ready = [item for pending, item in items
                     if cutoff is None or int(pending.record.sequence_number) < cutoff]
            held = [pending.record.sequence_number for pending, item in items
                    if cutoff is not None and int(pending.record.sequence_number) >= cutoff]
            failed.update(held)
            if not ready:
                return ApplyResult()
            settings = serving.interest
            state = UNKNOWN if known is None else known.get(user_id)
            return self.store.update(user_id, lambda user: apply_user_events(
                user, ready, settings, self.catalog.text_vectors_for), known=state)

        try:  # one batch read for every user of the batch; each write stays conditional on what was read
            known: dict[str, UserInterest] | None = self.store.get_many(list(by_user))
        except Exception:  # noqa: BLE001 - each write then reads its user itself
            log.warning("batch read of the users failed; reading them one by one", exc_info=True)
            known = None
        futures = {user_id: self._writers.submit(write, user_id, items) for user_id, items in by_user.items()}
        for user_id, future in futures.items():
            try:
                result = future.result()
            except Exception:  # noqa: BLE001 - this user's records are retried; others are not held back
                log.exception("writing a user's interest failed; their records of this batch will be retried",
                              extra={"user": user_ref(user_id)})
                failed.update(pending.record.sequence_number for pending, _ in by_user[user_id])
                continue
            report.accepted += result.applied
            report.duplicates += result.duplicates
            report.redelivered += result.redelivered
            report.forgotten += result.forgotten
            report.user_writes += int(result.changed)
            if result.forgotten:
                log.info("ignored %d events of a deleted user dated at or before the deletion", result.forgotten,
                         extra={"user": user_ref(user_id)})

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._load_embedder()  # only when a batch has texts: item events need no model
        return self._embedder
