"""Records that can never be applied go to the dead-letter queue with their full payload and the reason.

(Lambda's own on-failure destination only receives a batch's coordinates; keeping the payload is ours.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pulse import aws
from pulse.stream import StreamRecord

# SQS allows 256 KiB per message and per batch; keep room for the envelope.
MAX_INLINE_PAYLOAD_BYTES = 180 * 1024
MAX_BATCH_BYTES = 240 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    record: StreamRecord

    def message(self, rejected_at: float) -> dict[str, Any]:
        record = self.record
        body: dict[str, Any] = {
            "reason": self.reason,
            "source": "pulse-ingest",
            "rejected_at": rejected_at,
            "event_source_arn": record.event_source_arn,
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "partition_key": record.partition_key,
            "approximate_arrival_timestamp": record.arrival_ts,
            "data_sha256": hashlib.sha256(record.data).hexdigest(),
            "data_bytes": len(record.data),
        }
        inline = record.data[:MAX_INLINE_PAYLOAD_BYTES]
        body["data_base64"] = base64.b64encode(inline).decode("ascii")
        body["truncated"] = len(inline) < len(record.data)  # the rest stays on the stream at these coordinates
        try:
            body["payload"] = json.loads(inline.decode("utf-8")) if not body["truncated"] else None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            body["payload"] = None
        return body


class DeadLetterSink(Protocol):
    def send(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Park the letters; returns those that could not be parked (the caller retries them)."""
        ...


class SqsDeadLetters:
    def __init__(self, queue_url: str):
        self.queue_url = queue_url

    def send(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        failed: list[DeadLetter] = []
        now = time.time()
        for chunk in _chunks(letters, now):
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
        self.messages.extend(letter.message(time.time()) for letter in letters)
        return []


def _chunks(letters: Sequence[DeadLetter], now: float) -> list[list[tuple[DeadLetter, str]]]:
    """At most 10 messages and MAX_BATCH_BYTES per SendMessageBatch."""
    chunks: list[list[tuple[DeadLetter, str]]] = []
    size = 0
    for letter in letters:
        body = json.dumps(letter.message(now))  # ASCII: SQS refuses some characters (NUL, U+FFFF, surrogates)
        length = len(body)
        if not chunks or len(chunks[-1]) == 10 or size + length > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((letter, body))
        size += length
    return chunks
