"""Plays the archive delivery stream (Kinesis Data Firehose) of template.yaml: a consumer of its own on the
stream that writes every record, newline-delimited and gzip-compressed, under archive/dt=<arrival day>/."""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import threading
import time
from typing import Any

from pulse.events.archive import partition

log = logging.getLogger(__name__)


class Archiver:
    def __init__(self, kinesis: Any, s3: Any, stream: str, bucket: str, *, interval_seconds: float = 60.0,
                 max_records: int = 10_000):
        self.kinesis, self.s3, self.stream, self.bucket = kinesis, s3, stream, bucket
        self.interval_seconds, self.max_records = interval_seconds, max_records
        self.archived = 0
        self._iterators: dict[str, str] = {}
        self._buffer: list[dict[str, Any]] = []
        self._since = time.monotonic()
        self._lock = threading.Lock()

    def poll_once(self) -> int:
        with self._lock:
            return self._poll()

    def drain(self) -> None:
        """Read everything on the stream now and write it out (tests, the end of a replay)."""
        with self._lock:
            while self._poll():
                pass
            if self._buffer:
                self._flush()

    def _poll(self) -> int:
        read = 0
        if not self._iterators:
            for shard in self.kinesis.list_shards(StreamName=self.stream)["Shards"]:
                self._iterators[shard["ShardId"]] = self.kinesis.get_shard_iterator(
                    StreamName=self.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for shard_id, iterator in list(self._iterators.items()):
            response = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            self._iterators[shard_id] = response["NextShardIterator"]
            self._buffer.extend(response["Records"])
            read += len(response["Records"])
        if self._buffer and (len(self._buffer) >= self.max_records
                             or time.monotonic() - self._since >= self.interval_seconds):
            self._flush()
        return read

    def _flush(self) -> None:
        """One gzip object per arrival day in the buffer (Firehose's !{timestamp:yyyy-MM-dd} prefix)."""
        by_day: dict[dt.date, list[bytes]] = {}
        for record in self._buffer:
            day = record["ApproximateArrivalTimestamp"].astimezone(dt.UTC).date()
            by_day.setdefault(day, []).append(record["Data"].rstrip(b"\n") + b"\n")
        for day, lines in by_day.items():
            stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
            key = f"{partition(day)}pulse-archive-{stamp}-{self.archived:012d}.gz"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(b"".join(lines)))
            self.archived += len(lines)
        self._buffer = []
        self._since = time.monotonic()

    def run(self, stop: threading.Event, idle_sleep: float = 0.5) -> None:
        while not stop.is_set():
            try:
                if self.poll_once() == 0:
                    stop.wait(idle_sleep)
            except Exception:  # noqa: BLE001 - keep archiving; the error is logged
                log.exception("archiver error; retrying")
                stop.wait(1.0)
        self.drain()
