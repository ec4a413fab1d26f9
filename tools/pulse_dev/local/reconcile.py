"""Reconciling a soak: what was sent against what the stack stored, parked, archived and logged (pure, apart from
the log scan); the verdicts the report prints."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulse.events.behaviour import decode_record_data, parse_event

MAX_DRAIN_SECONDS = 10.0  # the ingest kept up if it caught up this soon after the last put


@dataclass(frozen=True, slots=True)
class Record:
    """One PutRecords entry and what the soak expects of it."""

    partition_key: str
    data: bytes
    kind: str  # "event" (valid, first sending), "duplicate" (byte-identical re-send) or "poison"
    user_id: str
    event_id: str
    detail: str  # the event type, or the poison kind
    late: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def expected_event_counts(sent: Sequence[Record], forgotten: Mapping[str, float] | None = None) -> Counter[str]:
    """Distinct valid events per user: every first sending of a valid event (duplicates and poison excluded); of
    a deleted user (`forgotten`: user -> deletion time), only the events dated after the deletion."""
    forgotten = forgotten or {}
    return Counter(record.user_id for record in sent if record.kind == "event"
                   and (record.user_id not in forgotten or event_ts(record) > forgotten[record.user_id]))


def event_ts(record: Record) -> float:
    return parse_event(decode_record_data(record.data)).ts


def deletion_summary(sent: Sequence[Record], forgotten: Mapping[str, float], deleted: Sequence[str],
                     stored: Mapping[str, int], redelivered: int) -> dict[str, Any]:
    """Each deleted user must hold a tombstone time and exactly the events dated after it."""
    theirs = [record for record in sent if record.user_id in set(deleted)]
    expected = expected_event_counts(theirs, forgotten)
    wrong = [user for user in deleted if user not in forgotten or stored.get(user, 0) != expected.get(user, 0)]
    return {"users": len(deleted), "old_events_redelivered": redelivered,
            "events_before_deletion": sum(expected_event_counts(theirs).values()) - sum(expected.values()),
            "fresh_profiles": sum(expected.get(user, 0) > 0 for user in deleted),
            "without_tombstone": sum(user not in forgotten for user in deleted),
            "resurrected": sum(stored.get(user, 0) > expected.get(user, 0) for user in deleted),
            "mismatched": len(wrong), "examples": [{"user_id": user, "expected": expected.get(user, 0),
                                                    "stored": stored.get(user, 0)} for user in wrong[:10]]}


def compare_counts(expected: Mapping[str, int], stored: Mapping[str, int]) -> dict[str, Any]:
    """Per-user event_count against the expectation: lost (too few) and double-counted (too many) users."""
    differences = {user: stored.get(user, 0) - expected.get(user, 0) for user in set(expected) | set(stored)}
    lost = {user: -difference for user, difference in differences.items() if difference < 0}
    doubled = {user: difference for user, difference in differences.items() if difference > 0}
    examples = [{"user_id": user, "expected": expected.get(user, 0), "stored": stored.get(user, 0)}
                for user in sorted(set(lost) | set(doubled))[:10]]
    return {"users_expected": len(expected), "users_stored": len(stored), "events_expected": sum(expected.values()),
            "events_stored": sum(stored.values()), "mismatched_users": len(lost) + len(doubled),
            "lost_users": len(lost), "lost_events": sum(lost.values()), "double_counted_users": len(doubled),
            "double_counted_events": sum(doubled.values()), "examples": examples}


def match_dead_letters(poison: Sequence[Record], messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each dead letter matched to one sent poison record by the SHA-256 of its bytes; the payload it carries
    must be those bytes (base64, undecodable ones too) and it must give a reason."""
    waiting: dict[str, list[Record]] = {}
    for record in poison:
        waiting.setdefault(record.sha256, []).append(record)
    matched: list[Record] = []
    unmatched, batch_coordinates, without_reason, payload_altered = 0, 0, 0, 0
    reasons: dict[str, str] = {}
    unmatched_reasons: Counter[str] = Counter()
    for message in messages:
        if "KinesisBatchInfo" in message:  # the event source mapping gave up on a batch: records not applied
            batch_coordinates += 1
            continue
        candidates = waiting.get(message.get("data_sha256", ""))
        if not candidates:
            unmatched += 1
            unmatched_reasons[str(message.get("reason", ""))[:200]] += 1
            continue
        record = candidates.pop()
        matched.append(record)
        carried = base64.b64decode(message.get("data_base64", ""))
        if carried != record.data[: len(carried)] or (not message.get("truncated") and carried != record.data):
            payload_altered += 1
        if not message.get("reason"):
            without_reason += 1
        reasons.setdefault(record.detail, message.get("reason", ""))
    missing = [record for records in waiting.values() for record in records]
    return {"messages": len(messages), "poison_sent": len(poison), "matched": len(matched),
            "missing_poison": len(missing), "missing_by_kind": dict(Counter(record.detail for record in missing)),
            "unmatched_messages": unmatched, "unmatched_reasons": dict(unmatched_reasons.most_common(10)),
            "failure_destination_batches": batch_coordinates,
            "without_reason": without_reason, "payload_altered": payload_altered,
            "matched_by_kind": dict(sorted(Counter(record.detail for record in matched).items())),
            "reason_by_kind": dict(sorted(reasons.items()))}


def archive_coverage(sent: Sequence[Record], archived: set[tuple[str, str]]) -> dict[str, Any]:
    """Every accepted event (user_id, event_id) must be in the archive; anything else there is accounted for."""
    accepted = {(record.user_id, record.event_id) for record in sent if record.kind == "event"}
    poison_kinds = {(record.user_id, record.event_id): record.detail for record in sent if record.kind == "poison"}
    extra = archived - accepted
    return {"accepted": len(accepted), "archived_accepted": len(accepted & archived),
            "missing": len(accepted - archived), "missing_examples": sorted(accepted - archived)[:10],
            "contract_valid_poison": dict(Counter(poison_kinds[key] for key in extra if key in poison_kinds)),
            "unexpected": len([key for key in extra if key not in poison_kinds])}


def traffic_summary(sent: Sequence[Record]) -> dict[str, Any]:
    kinds = Counter(record.kind for record in sent)
    events = [record for record in sent if record.kind == "event"]
    return {"sent": len(sent), "accepted": kinds["event"], "rejected": kinds["poison"],
            "duplicates": kinds["duplicate"], "late": sum(record.late for record in events),
            "text": sum(record.detail == "search" for record in events),
            "users": len({record.user_id for record in events}),
            "by_type": dict(sorted(Counter(record.detail for record in events).items())),
            "poison_by_kind": dict(sorted(Counter(r.detail for r in sent if r.kind == "poison").items())),
            "bytes": sum(len(record.data) for record in sent)}


class RawIdScan(io.TextIOBase):
    """Stands in for stdout while the functions run: every log line is scanned for a raw user id of the soak
    (they all look like soak-00042; a log reference is u:<hex>) and dropped; ERROR lines still reach the console."""

    def __init__(self, console: Any, pattern: str = r"soak-\d{5}"):
        self.console, self.pattern = console, re.compile(pattern)
        self.lines, self.leaks = 0, 0
        self.examples: list[str] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            for line in text.splitlines():
                self.lines += 1
                if self.pattern.search(line):
                    self.leaks += 1
                    if len(self.examples) < 5:
                        self.examples.append(line[:300])
                if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line or line.startswith(("ERROR ",
                                                                                                    "CRITICAL ")):
                    self.console.write(line + "\n")
        return len(text)

    def summary(self) -> dict[str, Any]:
        return {"lines_scanned": self.lines, "raw_user_ids": self.leaks, "examples": self.examples}


class _ScannedRecords(logging.Handler):
    """Records of loggers that do not write to stdout (the root logger's), rendered with their extra fields."""

    def __init__(self, scan: RawIdScan):
        super().__init__(logging.INFO)
        self.scan = scan

    def emit(self, record: logging.LogRecord) -> None:
        fields = {key: value for key, value in vars(record).items() if key not in ("msg", "args", "exc_info")}
        self.scan.write(f"{record.levelname} {record.getMessage()} {fields!r}\n")


def scanning_logs(scan: RawIdScan) -> Callable[[], None]:
    """Route every log line of this process at INFO and above through `scan`; returns the undo."""
    original = sys.stdout
    handlers: list[logging.StreamHandler[Any]] = [
        handler for name in ("pulse", None) for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is original]
    previous = [handler.setStream(scan) for handler in handlers]  # Powertools' JSON handlers made earlier
    records = _ScannedRecords(scan)
    logging.getLogger().addHandler(records)
    sys.stdout = scan  # handlers made from now on write here

    scan_stream: object = scan  # a text stream, though not a typing.TextIO

    def undo() -> None:
        sys.stdout = original
        logging.getLogger().removeHandler(records)
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)
        for name in ("pulse", None):
            for other in logging.getLogger(name).handlers:
                if isinstance(other, logging.StreamHandler) and other.stream is scan_stream:
                    other.setStream(original)
    return undo


def checks(report: dict[str, Any]) -> dict[str, bool]:
    counts, letters, archive, api = report["counts"], report["dead_letters"], report["archive"], report["api"]
    return {
        "ingest_caught_up": report["ingest"]["caught_up"],
        "nothing_lost": counts["lost_users"] == 0,
        "nothing_double_counted": counts["double_counted_users"] == 0,
        "every_poison_in_dlq": (letters["matched"] == letters["poison_sent"] == letters["messages"]
                                and letters["without_reason"] == letters["payload_altered"] == 0),
        "archive_complete": archive["missing"] == 0 and archive["unexpected"] == 0,
        "api_no_5xx": api["server_errors_5xx"] == 0 and api["no_answer"] == 0,
        "deletions_stick": report["deletions"]["mismatched"] == 0,
        "no_raw_user_ids_in_logs": report["logs"]["raw_user_ids"] == 0 and report["logs"]["lines_scanned"] > 0,
    }


def sustained(report: dict[str, Any]) -> dict[str, Any]:
    """Did the stack keep up with the rate (reported, not a check: correctness holds at any speed)?"""
    sending, ingest = report["sending"], report["ingest"]
    ingest_kept_up = ingest["caught_up"] and ingest["drain_seconds"] <= MAX_DRAIN_SECONDS
    return {"rate": sending["target_rate"], "kept_schedule": sending["kept_schedule"],
            "ingest_kept_up": ingest_kept_up, "drain_seconds": ingest["drain_seconds"],
            "backlog_max_records": ingest["backlog_max_records"],
            "verdict": sending["kept_schedule"] and ingest_kept_up}
