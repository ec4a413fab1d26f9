"""Plays Lambda's Kinesis event source mapping against any Kinesis endpoint, with the template's settings.

Batch size and batching window, ReportBatchItemFailures (retry from the lowest failed record), bisect on
function error, bounded retries and record age, and the on-failure destination (which, as on AWS,
receives only the batch's coordinates).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pulse.events.stream import lambda_record
from pulse_dev.local.functions import Handler, LambdaContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MappingSettings:
    batch_size: int = 100
    batching_window_seconds: float = 0.0
    bisect_on_error: bool = False
    max_retries: int = -1  # -1: forever, as on AWS
    max_record_age_seconds: float = -1
    report_batch_item_failures: bool = False
    starting_position: str = "TRIM_HORIZON"

    @classmethod
    def from_event(cls, properties: dict[str, Any]) -> MappingSettings:
        return cls(
            batch_size=int(properties.get("BatchSize", 100)),
            batching_window_seconds=float(properties.get("MaximumBatchingWindowInSeconds", 0)),
            bisect_on_error=str(properties.get("BisectBatchOnFunctionError", False)).lower() == "true",
            max_retries=int(properties.get("MaximumRetryAttempts", -1)),
            max_record_age_seconds=float(properties.get("MaximumRecordAgeInSeconds", -1)),
            report_batch_item_failures="ReportBatchItemFailures" in (properties.get("FunctionResponseTypes") or []),
            starting_position=str(properties.get("StartingPosition", "TRIM_HORIZON")),
        )


@dataclass
class PollerStats:
    invocations: int = 0
    records: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    batches_sent_to_failure_destination: int = 0


class StreamPoller:
    def __init__(self, kinesis: Any, stream_name: str, handler: Handler, context: LambdaContext,
                 settings: MappingSettings, on_failure: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.stream_arn = kinesis.describe_stream_summary(StreamName=stream_name)[
            "StreamDescriptionSummary"]["StreamARN"]
        self.handler = handler
        self.context = context
        self.settings = settings
        self.on_failure = on_failure
        self.clock = clock
        self.stats = PollerStats()
        self._iterators: dict[str, str] = {}
        self.polls_started = 0  # poll_once calls begun
        self.last_idle_poll = -1  # the latest poll that found nothing to read and nothing pending
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._pending_since: dict[str, float] = {}

    def poll_once(self) -> int:
        """Read every shard once and invoke the function for each ready batch; returns records delivered."""
        poll = self.polls_started
        self.polls_started += 1
        delivered = 0
        read = 0
        for shard_id in self._shards():
            pending = self._pending.setdefault(shard_id, [])
            if len(pending) < self.settings.batch_size:
                response = self.kinesis.get_records(ShardIterator=self._iterators[shard_id],
                                                    Limit=self.settings.batch_size - len(pending))
                self._iterators[shard_id] = response["NextShardIterator"]
                if response["Records"] and not pending:
                    self._pending_since[shard_id] = self.clock()
                pending.extend(response["Records"])
                read += len(response["Records"])
            waited = self.clock() - self._pending_since.get(shard_id, self.clock())
            if pending and (len(pending) >= self.settings.batch_size
                            or waited >= self.settings.batching_window_seconds):
                batch, self._pending[shard_id] = pending[: self.settings.batch_size], pending[self.settings.batch_size:]
                self._deliver(shard_id, [self._lambda_record(shard_id, record) for record in batch])
                delivered += len(batch)
        if read == 0 and not any(self._pending.values()):
            self.last_idle_poll = poll
        return delivered

    def caught_up_since(self, poll: int) -> bool:
        """True once a poll begun at or after `poll` found the stream fully delivered."""
        return self.last_idle_poll >= poll

    def run(self, stop: threading.Event, idle_sleep: float = 0.2) -> None:
        while not stop.is_set():
            try:
                if self.poll_once() == 0:
                    stop.wait(idle_sleep)
            except Exception:  # noqa: BLE001 - keep the local stack alive; the error is logged
                log.exception("stream poller error; retrying")
                stop.wait(1.0)

    def drain(self, timeout: float = 60.0) -> int:
        """Deliver everything currently on the stream (tests and batch jobs)."""
        total, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            delivered = self.poll_once()
            total += delivered
            if delivered == 0 and not any(self._pending.values()):
                return total
        raise TimeoutError(f"stream {self.stream_name} not drained within {timeout} s")

    def _shards(self) -> list[str]:
        if not self._iterators:
            for shard in self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]:
                self._iterators[shard["ShardId"]] = self.kinesis.get_shard_iterator(
                    StreamName=self.stream_name, ShardId=shard["ShardId"],
                    ShardIteratorType=self.settings.starting_position)["ShardIterator"]
        return list(self._iterators)

    def _deliver(self, shard_id: str, records: list[dict[str, Any]], attempt: int = 0) -> None:
        """Invoke with retries; partial failures retry from the lowest failed record, errors may bisect."""
        while records:
            records = self._drop_expired(shard_id, records)
            if not records:
                return
            failed_from = self._invoke(records)
            if failed_from is None:
                return
            if failed_from == "error" and self.settings.bisect_on_error and len(records) > 1:
                middle = len(records) // 2
                self._deliver(shard_id, records[:middle], attempt + 1)
                self._deliver(shard_id, records[middle:], attempt + 1)
                return
            if isinstance(failed_from, int):  # not "error": the index to retry from
                records = records[failed_from:]
            if 0 <= self.settings.max_retries <= attempt:
                self._send_to_failure_destination(shard_id, records, attempt)
                return
            attempt += 1

    def _invoke(self, records: list[dict[str, Any]]) -> int | str | None:
        """None when the batch succeeded; the index to retry from; or "error" for a function error."""
        self.stats.invocations += 1
        self.stats.records += len(records)
        try:
            response = self.handler({"Records": records}, self.context)
        except Exception:  # noqa: BLE001 - a function error, as Lambda sees it
            log.exception("ingest function error (batch of %d records)", len(records))
            self.stats.function_errors += 1
            return "error"
        reported = self.settings.report_batch_item_failures and isinstance(response, dict)
        failures = (response.get("batchItemFailures") or []) if reported else []
        if not failures:
            return None
        self.stats.partial_failures += 1
        failed = {failure["itemIdentifier"] for failure in failures}
        numbers = [record["kinesis"]["sequenceNumber"] for record in records]
        if not failed <= set(numbers):
            return 0  # an identifier that is not in the batch: Lambda retries the whole batch
        return min(index for index, number in enumerate(numbers) if number in failed)

    def _drop_expired(self, shard_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = self.settings.max_record_age_seconds
        if limit < 0:
            return records
        now = self.clock()
        expired = [r for r in records if now - r["kinesis"]["approximateArrivalTimestamp"] > limit]
        if expired:
            self._send_to_failure_destination(shard_id, expired, 0)
        return [r for r in records if now - r["kinesis"]["approximateArrivalTimestamp"] <= limit]

    def _send_to_failure_destination(self, shard_id: str, records: list[dict[str, Any]], attempts: int) -> None:
        self.stats.batches_sent_to_failure_destination += 1
        message = {
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts + 1,
                               "functionArn": self.context.invoked_function_arn},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": records[0]["kinesis"]["sequenceNumber"],
                "endSequenceNumber": records[-1]["kinesis"]["sequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(records[0]["kinesis"]["approximateArrivalTimestamp"]),
                "approximateArrivalOfLastRecord": _iso(records[-1]["kinesis"]["approximateArrivalTimestamp"]),
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        }
        log.error("batch of %d records exhausted its retries; coordinates sent to the on-failure destination",
                  len(records))
        if self.on_failure is not None:
            self.on_failure(message)

    def _lambda_record(self, shard_id: str, record: dict[str, Any]) -> dict[str, Any]:
        arrival = record["ApproximateArrivalTimestamp"]
        return lambda_record(shard_id=shard_id, sequence_number=record["SequenceNumber"],
                             partition_key=record["PartitionKey"], data=record["Data"],
                             arrival=arrival.timestamp() if hasattr(arrival, "timestamp") else arrival,
                             stream_arn=self.stream_arn, region=self.kinesis.meta.region_name,
                             role_arn="arn:aws:iam::123456789012:role/pulse-local")


def sqs_destination(sqs: Any, queue_url: str) -> Callable[[dict[str, Any]], None]:
    return lambda message: sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
