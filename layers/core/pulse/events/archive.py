"""The event archive: every record of the stream as gzip JSON Lines under archive/dt=YYYY-MM-DD/ (written by
Kinesis Data Firehose on AWS, by pulse_dev.local.archiver locally). Read back for training, de-duplicated."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from pulse import aws
from pulse.events.behaviour import MAX_RECORD_BYTES, BehaviourEvent, InvalidEventError, decode_record_data, parse_event

ARCHIVE_PREFIX = "archive/"
# Every prefix the pipeline writes raw events under (template.yaml, ArchiveDeliveryStream; pulse.events.dead_letters):
# `pulse forget` covers them all.
ARCHIVE_ERRORS_PREFIX = "archive-errors/"
WHOLE_RECORD_PREFIXES = ("dead-letters/",)  # the ingest parks a record too big for its DLQ message there
RAW_EVENT_PREFIXES = (ARCHIVE_PREFIX, ARCHIVE_ERRORS_PREFIX, *WHOLE_RECORD_PREFIXES)
GZIP_MAGIC = b"\x1f\x8b"


def partition(day: dt.date, prefix: str = ARCHIVE_PREFIX) -> str:
    return f"{prefix}dt={day.isoformat()}/"


@dataclass
class ArchiveReadStats:
    objects: int = 0
    lines: int = 0
    invalid: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


def read_archive(bucket: str, first_day: dt.date, last_day: dt.date, *, prefix: str = ARCHIVE_PREFIX,
                 stats: ArchiveReadStats | None = None, newest_first: bool = False) -> Iterator[BehaviourEvent]:
    """The valid events archived between two arrival days (inclusive), each event_id once. `newest_first`: the
    last day first and, within a day, the objects in reverse key order (Firehose names them by arrival time),
    so a reader that needs only the newest events can stop early."""
    stats = stats if stats is not None else ArchiveReadStats()
    s3 = aws.client("s3")
    seen: set[tuple[str, str]] = set()
    days = [first_day + dt.timedelta(days=offset) for offset in range((last_day - first_day).days + 1)]
    for day in reversed(days) if newest_first else days:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=partition(day, prefix))
        entries = [entry for page in pages for entry in page.get("Contents", [])]
        for entry in reversed(entries) if newest_first else entries:
            stats.objects += 1
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read())
            for decoded in _decoded(body.splitlines()):
                stats.lines += 1
                try:  # the ingest's own checks (size, UTF-8, JSON, contract): what it parks stays out
                    if isinstance(decoded, InvalidEventError):
                        raise decoded
                    event = parse_event(decoded)
                except InvalidEventError as error:
                    stats.invalid += 1
                    if len(stats.problems) < 20:
                        stats.problems.append(f"{entry['Key']}: {error}")
                    continue
                key = (event.user_id, event.event_id)
                if key in seen:
                    stats.duplicates += 1
                    continue
                seen.add(key)
                yield event


@dataclass
class ErasureStats:
    versions_read: int = 0
    objects_rewritten: int = 0
    lines_removed: int = 0
    versions_deleted: int = 0


def erase_users(bucket: str, user_ids: set[str], *, prefixes: tuple[str, ...] = RAW_EVENT_PREFIXES) -> ErasureStats:
    """Right to erasure wherever the pipeline writes raw events: every version of every object under `prefixes`,
    gzip or plain. An archive object's current version is rewritten without the users' lines; a parked record
    (one object a record) that mentions them goes whole; then every version that held them is deleted (the
    bucket is versioned), the versions of objects deleted since included."""
    s3 = aws.client("s3")
    stats = ErasureStats()
    matcher = _UserMatcher(user_ids)
    versions = [version for prefix in prefixes
                for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
                for version in page.get("Versions", [])]  # listed first: the rewrites add versions
    for version in versions:
        stats.versions_read += 1
        key, version_id = version["Key"], version["VersionId"]
        body = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()
        compressed = body[:2] == GZIP_MAGIC
        data = gzip.decompress(body) if compressed else body
        lines = data.splitlines()
        if key.startswith(WHOLE_RECORD_PREFIXES):
            kept = [] if matcher.mentions(data) or any(map(matcher.mentions, lines)) else lines
        else:
            kept = _without_users(lines, matcher)
        if len(kept) == len(lines):
            continue
        stats.lines_removed += len(lines) - len(kept)
        if kept and version.get("IsLatest"):
            text = b"".join(line + b"\n" for line in kept)
            written = s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text) if compressed else text)
            stats.objects_rewritten += 1
            if written.get("VersionId") in (None, "null"):  # an unversioned bucket: the overwrite erased them
                continue
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        stats.versions_deleted += 1
    return stats


def _without_users(lines: list[bytes], matcher: _UserMatcher) -> list[bytes]:
    """The lines but those of records that mention the users; a record pretty-printed over several lines goes
    with all its lines."""
    kept: list[bytes] = []
    start = 0
    while start < len(lines):
        span = _record_span(lines, start)
        record = lines[start:start + span]
        if not (matcher.mentions(b"\n".join(record)) or any(map(matcher.mentions, record))):
            kept.extend(record)
        start += span
    return kept


def _decoded(lines: list[bytes]) -> Iterator[object]:
    """Each record of an archive object as decode_record_data gives it (or why it cannot): one per line, except
    a record pretty-printed over several lines, joined first. A line is parsed once (this is training's read)."""
    start = 0
    while start < len(lines):
        line, start = lines[start], start + 1
        if not line.strip():
            continue
        try:
            yield decode_record_data(line)
            continue
        except InvalidEventError as error:
            span = _record_span(lines, start - 1)
            if span == 1:
                yield error
                continue
        record, start = b"\n".join(lines[start - 1:start - 1 + span]), start - 1 + span
        try:
            yield decode_record_data(record)
        except InvalidEventError as error:
            yield error


def _record_span(lines: list[bytes], start: int) -> int:
    """How many lines from `start` hold one JSON value: 1 for a JSON line or garbage; more for a value that opens
    on a line of its own and closes within a record's size."""
    if not lines[start].lstrip().startswith((b"{", b"[")) or _is_json(lines[start]):
        return 1
    size = len(lines[start])
    for end in range(start + 1, len(lines)):
        size += len(lines[end]) + 1
        if size > MAX_RECORD_BYTES:
            break
        if _is_json(b"\n".join(lines[start:end + 1])):
            return end + 1 - start
    return 1


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


class _UserMatcher:
    """Whether a line is one of these users': a JSON value anywhere in it with "user_id" naming one of them
    (Unicode NFC-equal), a Firehose error record whose base64 rawData is such a line, or a line that is not
    JSON and contains one of the ids verbatim (UTF-8, or escaped as JSON would)."""

    def __init__(self, user_ids: set[str]):
        self.ids = {unicodedata.normalize("NFC", user_id) for user_id in user_ids}
        self.verbatim = {form for user_id in user_ids for text in _spellings(user_id)
                         for form in (text.encode("utf-8", "surrogatepass"), json.dumps(text)[1:-1].encode())}

    def mentions(self, line: bytes) -> bool:
        try:
            payload = json.loads(line)
        except (ValueError, RecursionError):
            return any(text in line for text in self.verbatim)
        pending = [payload]
        while pending:
            value = pending.pop()
            if isinstance(value, list):
                pending.extend(value)
            elif isinstance(value, dict):
                user_id = value.get("user_id")
                if isinstance(user_id, str) and unicodedata.normalize("NFC", user_id) in self.ids:
                    return True
                raw = value.get("rawData")
                if isinstance(raw, str) and self.mentions(_base64_or_empty(raw)):
                    return True
                pending.extend(value.values())
        return False


def _spellings(user_id: str) -> set[str]:
    return {user_id, unicodedata.normalize("NFC", user_id), unicodedata.normalize("NFD", user_id)}


def _base64_or_empty(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""
