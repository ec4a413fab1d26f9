"""The event archive: every record of the stream as gzip JSON Lines under archive/dt=YYYY-MM-DD/ (written by
Kinesis Data Firehose on AWS, by pulse.local.archiver locally). Read back for training, de-duplicated."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from pulse import aws
from pulse.events import BehaviourEvent, InvalidEvent, decode_record_data, parse_event

ARCHIVE_PREFIX = "archive/"


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
                 stats: ArchiveReadStats | None = None) -> Iterator[BehaviourEvent]:
    """The valid events archived between two arrival days (inclusive), each event_id once."""
    stats = stats if stats is not None else ArchiveReadStats()
    s3 = aws.client("s3")
    seen: set[tuple[str, str]] = set()
    day = first_day
    while day <= last_day:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=partition(day, prefix))
        for page in pages:
            for entry in page.get("Contents", []):
                stats.objects += 1
                body = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read())
                for line in body.splitlines():
                    if not line.strip():
                        continue
                    stats.lines += 1
                    try:  # the ingest's own checks (size, UTF-8, JSON, contract): what it parks stays out
                        event = parse_event(decode_record_data(line))
                    except InvalidEvent as error:
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
        day += dt.timedelta(days=1)


@dataclass
class ErasureStats:
    objects_read: int = 0
    objects_rewritten: int = 0
    lines_removed: int = 0
    old_versions_deleted: int = 0


def erase_users(bucket: str, user_ids: set[str], *, prefix: str = ARCHIVE_PREFIX) -> ErasureStats:
    """Right to erasure in the archive: rewrite every archived object without the lines of these users, then
    delete the objects' earlier versions (the bucket is versioned). A line that is not JSON is dropped too when
    it quotes one of the ids, so parked garbage cannot keep them either."""
    s3 = aws.client("s3")
    stats = ErasureStats()
    quoted = [json.dumps(user_id).encode() for user_id in user_ids]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            stats.objects_read += 1
            lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()).splitlines()
            kept = [line for line in lines if not _mentions(line, user_ids, quoted)]
            if len(kept) == len(lines):
                continue
            stats.lines_removed += len(lines) - len(kept)
            written = s3.put_object(Bucket=bucket, Key=entry["Key"],
                                    Body=gzip.compress(b"".join(line + b"\n" for line in kept)))
            stats.objects_rewritten += 1
            stats.old_versions_deleted += _delete_other_versions(s3, bucket, entry["Key"], written.get("VersionId"))
    return stats


def _mentions(line: bytes, user_ids: set[str], quoted: list[bytes]) -> bool:
    try:
        payload = json.loads(line)
    except ValueError:
        return any(text in line for text in quoted)
    return isinstance(payload, dict) and payload.get("user_id") in user_ids


def _delete_other_versions(s3, bucket: str, key: str, keep: str | None) -> int:
    if keep is None:  # an unversioned bucket: the overwrite was the erasure
        return 0
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
            if version["Key"] == key and version["VersionId"] != keep:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
                deleted += 1
    return deleted
