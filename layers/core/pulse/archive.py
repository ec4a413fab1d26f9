"""The event archive: every record of the stream as gzip JSON Lines under archive/dt=YYYY-MM-DD/ (written by
Kinesis Data Firehose on AWS, by pulse.local.archiver locally). Read back for training, de-duplicated."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from pulse import aws
from pulse.events import BehaviourEvent, InvalidEvent, parse_event

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
                    try:
                        event = parse_event(json.loads(line))
                    except (ValueError, InvalidEvent) as error:  # JSONDecodeError is a ValueError
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
