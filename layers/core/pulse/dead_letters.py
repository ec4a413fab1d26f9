"""Records that can never be applied go to the dead-letter queue with their full payload and the reason.

(Lambda's own on-failure destination only receives a batch's coordinates; keeping the payload is ours.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pulse import aws
from pulse.stream import StreamRecord

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
