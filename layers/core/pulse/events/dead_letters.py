"""Records that can never be applied go to the dead-letter queue with their full payload and the reason.

(Lambda's own on-failure destination only receives a batch's coordinates; keeping the payload is ours.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pulse import aws
from pulse.errors import PulseError
from pulse.events.behaviour import InvalidEventError, TimeLimits, encode_event, parse_event
from pulse.events.stream import StreamRecord

# SQS allows 256 KiB per message (body and attributes) and per batch: a body above MAX_MESSAGE_BYTES carries its
# record in the bucket instead (dead-letters/<day>/<shard>-<sequence>.bin) and says where.
MAX_MESSAGE_BYTES = 200 * 1024
MAX_BATCH_BYTES = 240 * 1024
DEAD_LETTER_PREFIX = "dead-letters/"
SOURCE = "pulse-ingest"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    record: StreamRecord

    def message(self, rejected_at: float, payload_location: str | None = None, *,
                inline_bytes: int | None = None) -> dict[str, Any]:
        """The message: the record's coordinates and reason, and its bytes (base64, plus the JSON they hold if
        any), or where the bucket keeps them; `inline_bytes` truncates them (when nowhere else can hold them)."""
        record = self.record
        body: dict[str, Any] = {
            "reason": self.reason,
            "source": SOURCE,
            "rejected_at": rejected_at,
            "event_source_arn": record.event_source_arn,
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "partition_key": record.partition_key,
            "approximate_arrival_timestamp": record.arrival_ts,
            "data_sha256": hashlib.sha256(record.data).hexdigest(),
            "data_bytes": len(record.data),
        }
        if payload_location is not None:
            body["payload_location"] = payload_location
            body["truncated"] = False
            return body
        inline = record.data if inline_bytes is None else record.data[:inline_bytes]
        body["data_base64"] = base64.b64encode(inline).decode("ascii")
        body["truncated"] = len(inline) < len(record.data)  # the rest stays on the stream at these coordinates
        body["payload"] = None if body["truncated"] else _json_or_none(inline)
        return body

    def payload_key(self, rejected_at: float) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(rejected_at))
        return f"{DEAD_LETTER_PREFIX}{day}/{self.record.shard_id}-{self.record.sequence_number}.bin"


def fitted_body(letter: DeadLetter, rejected_at: float, park_payload: Callable[[str, bytes], str] | None) -> str:
    """The message body (JSON, ASCII: SQS refuses some characters), at most MAX_MESSAGE_BYTES: the payload inline
    if it fits (with its JSON, else without), else in the bucket (`park_payload(key, data)` -> its location), else
    truncated."""
    message = letter.message(rejected_at)
    body = json.dumps(message)
    if len(body) <= MAX_MESSAGE_BYTES:
        return body
    body = json.dumps({**message, "payload": None})  # the bytes alone (JSON escaping can triple its size)
    if len(body) <= MAX_MESSAGE_BYTES:
        return body
    if park_payload is not None:
        location = park_payload(letter.payload_key(rejected_at), letter.record.data)
        return json.dumps(letter.message(rejected_at, location))
    room = (MAX_MESSAGE_BYTES - len(json.dumps(letter.message(rejected_at, inline_bytes=0)))) * 3 // 4 - 4
    return json.dumps(letter.message(rejected_at, inline_bytes=max(0, room)))


class DeadLetterSink(Protocol):
    def send(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Park the letters; returns those that could not be parked (the caller retries them)."""
        ...


class SqsDeadLetters:
    def __init__(self, queue_url: str, bucket: str | None = None):
        self.queue_url = queue_url
        self.bucket = bucket  # where payloads too big for a message go; None: they are truncated

    def send(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        failed: list[DeadLetter] = []
        now = time.time()
        bodies: list[tuple[DeadLetter, str]] = []
        for letter in letters:
            try:
                bodies.append((letter, fitted_body(letter, now, self._park_payload if self.bucket else None)))
            except Exception:  # noqa: BLE001 - the bucket refused: this record fails and Lambda retries it
                failed.append(letter)
        for chunk in _chunks(bodies):
            entries = [{"Id": str(index), "MessageBody": body,
                        "MessageAttributes": {"reason": {"DataType": "String",
                                                         "StringValue": sqs_safe(letter.reason)[:256]}}}
                       for index, (letter, body) in enumerate(chunk)]
            try:
                response = aws.client("sqs").send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception:  # noqa: BLE001 - reported back: these records fail and Lambda retries them
                failed.extend(letter for letter, _ in chunk)
                continue
            failed.extend(chunk[int(entry["Id"])][0] for entry in response.get("Failed", []))
        return failed

    def _park_payload(self, key: str, data: bytes) -> str:
        aws.client("s3").put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"


def sqs_safe(text: str) -> str:
    """Only the characters SQS accepts in messages and attributes (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
    #x10000-#x10FFFF); others are written as JSON escapes."""
    def allowed(char: str) -> bool:
        code = ord(char)
        return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000

    return "".join(char if allowed(char) else json.dumps(char)[1:-1] for char in text)


class InMemoryDeadLetters:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        self.messages.extend(json.loads(fitted_body(letter, time.time(), None)) for letter in letters)
        return []


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except Exception:  # noqa: BLE001 - not JSON (or JSON Python will not read, e.g. a 5,000-digit number)
        return None


def _chunks(bodies: Sequence[tuple[DeadLetter, str]]) -> list[list[tuple[DeadLetter, str]]]:
    """At most 10 messages and MAX_BATCH_BYTES per SendMessageBatch."""
    chunks: list[list[tuple[DeadLetter, str]]] = []
    size = 0
    for letter, body in bodies:
        if not chunks or len(chunks[-1]) == 10 or size + len(body) > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((letter, body))
        size += len(body)
    return chunks


# --- Replay -------------------------------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    messages: int = 0  # read from the queue
    resubmitted: int = 0  # records put on the stream again, as new records
    replayed_messages: int = 0  # deleted from the queue: every record of theirs is back on the stream
    kept: int = 0  # left in the queue (still invalid, or their records could not be recovered)
    problems: list[str] = field(default_factory=list)


def replay_dead_letters(queue_url: str, stream_name: str, *, limits: TimeLimits | None = None,
                        max_messages: int | None = None, visibility_seconds: int = 300) -> ReplayReport:
    """Put the records of the dead-letter queue back on the stream as NEW records (the stream's watermark would
    skip them at their old sequence numbers), each as one compact JSON line with PartitionKey = its user_id, then
    delete their messages. The ingest applies each event once: its event_id de-duplication drops any that had
    been applied already. A parked record that is still invalid stays in the queue, with the reason reported.

    Both kinds of message are replayed: the ingest's parked records (payload inline or in the bucket) and the
    event source mapping's batch coordinates (read back from the stream while it still holds them)."""
    sqs, kinesis = aws.client("sqs"), aws.client("kinesis")
    report = ReplayReport()
    while max_messages is None or report.messages < max_messages:
        batch = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0, VisibilityTimeout=visibility_seconds,
                                    MaxNumberOfMessages=10 if max_messages is None
                                    else min(10, max_messages - report.messages)
                                    ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            report.messages += 1
            try:
                entries = _replayable(json.loads(message["Body"]), stream_name, limits)
            except ReplayRefusedError as error:
                report.kept += 1
                report.problems.append(f"message {message['MessageId']}: {error}")
                continue
            refused = _put_all(kinesis, stream_name, entries)
            if refused:
                report.kept += 1
                report.problems.append(f"message {message['MessageId']}: the stream refused {refused} record(s); "
                                       "kept for a later replay")
                continue
            report.resubmitted += len(entries)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.replayed_messages += 1
    return report


class ReplayRefusedError(PulseError, ValueError):
    """A message whose records cannot be put back (yet); the message says why."""


def _replayable(body: dict[str, Any], stream_name: str, limits: TimeLimits | None) -> list[dict[str, Any]]:
    """-> PutRecords entries for the message's records."""
    if "KinesisBatchInfo" in body:  # the event source mapping gave up on this batch: every record of it
        entries = []
        for data in _records_of_batch(body["KinesisBatchInfo"], stream_name):
            try:
                entries.append(_entry(data, limits))
            except InvalidEventError:
                continue  # never applicable: the ingest would only park it
        return entries
    if body.get("source") != SOURCE:
        raise ReplayRefusedError("not a Pulse dead letter")
    try:
        return [_entry(_parked_bytes(body), limits)]
    except InvalidEventError as error:
        raise ReplayRefusedError(f"still invalid: {error}") from None


def _entry(data: bytes, limits: TimeLimits | None) -> dict[str, Any]:
    """A record as the ingest wants it: its event re-written as one compact JSON line, keyed by its user_id. Only
    what a replay can mend is mended (line breaks, the partition key); the event must be valid as it is."""
    try:
        payload = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except InvalidEventError:
        raise
    except Exception as error:  # noqa: BLE001 - not JSON, not UTF-8, too deep, too long a number
        raise InvalidEventError(f"the record is not UTF-8 JSON ({type(error).__name__})") from None
    event = parse_event(payload, limits)
    return {"PartitionKey": event.user_id, "Data": encode_event(payload, event)}


def _refuse_constant(name: str) -> float:
    raise InvalidEventError(f"{name} is not a JSON number")


def _parked_bytes(body: dict[str, Any]) -> bytes:
    if body.get("payload_location"):
        bucket, _, key = body["payload_location"].removeprefix("s3://").partition("/")
        try:
            data: bytes = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            return data
        except Exception as error:  # noqa: BLE001 - e.g. expired with the bucket's lifecycle
            raise ReplayRefusedError(f"its payload {body['payload_location']} cannot be read ({type(error).__name__})"
                                ) from None
    if body.get("truncated"):
        raise ReplayRefusedError("its payload was truncated (too big for a message, and no bucket was configured)")
    return base64.b64decode(body.get("data_base64", ""))


def _records_of_batch(info: dict[str, Any], stream_name: str) -> list[bytes]:
    """The records between the batch's first and last sequence numbers, read from the stream."""
    kinesis = aws.client("kinesis")
    try:
        iterator = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=info["shardId"],
                                              ShardIteratorType="AT_SEQUENCE_NUMBER",
                                              StartingSequenceNumber=info["startSequenceNumber"])["ShardIterator"]
    except Exception as error:  # noqa: BLE001 - the stream no longer holds them (24 h retention)
        raise ReplayRefusedError(f"the batch's records cannot be read from the stream ({type(error).__name__})"
                                 ) from None
    last, wanted = int(info["endSequenceNumber"]), int(info.get("batchSize") or 0)
    found: list[bytes] = []
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        for record in response["Records"]:
            if int(record["SequenceNumber"]) > last:
                return found
            found.append(record["Data"])
        if not response["Records"] or (wanted and len(found) >= wanted):
            break
        iterator = response.get("NextShardIterator")
    if not found:
        raise ReplayRefusedError("the batch's records are no longer on the stream")
    return found


def _put_all(kinesis: Any, stream_name: str, entries: list[dict[str, Any]], attempts: int = 4) -> int:
    """PutRecords (500 at a time), re-putting what Kinesis refused; -> how many were refused in the end."""
    refused = 0
    for start in range(0, len(entries), 500):
        pending = entries[start:start + 500]
        for attempt in range(attempts):
            results = kinesis.put_records(StreamName=stream_name, Records=pending)["Records"]
            pending = [entry for entry, result in zip(pending, results, strict=True) if "ErrorCode" in result]
            if not pending:
                break
            time.sleep(0.05 * 2**attempt)
        refused += len(pending)
    return refused
