"""Where user interest lives: a small interface, a DynamoDB implementation (PynamoDB) and an in-memory fake.

Each update is one conditional write per user (optimistic locking on `version`), retried on conflict. The
history, the recent items and the stream positions travel as one zlib-compressed JSON attribute (`state`):
a MovieLens-like stream writes items of ~1.6 KB (2 write units) instead of ~5 KB as plain attributes.
A deletion is such a write too: it replaces the user with a tombstone (the deletion time, a new version), so a
write prepared from what was read before it fails its condition and its retry reads the tombstone.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import numpy as np
from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import DoesNotExist, PutError
from pynamodb.models import Model

from pulse.container import on_reset
from pulse.errors import PulseError
from pulse.interest.model import (
    DIGEST_BYTES,
    WRITE_ATTEMPTS,
    Engagement,
    ScaleState,
    UserInterest,
    forget_user,
)


class Outcome(Protocol):
    @property
    def changed(self) -> bool: ...


Result = TypeVar("Result", bound=Outcome)
LEGACY_DIGEST_BYTES = 8  # `recent_event_ids` of items written by the earlier release
STATE_COMPRESSION_LEVEL = 9  # ~40 µs to compress a 4 KB state; level 6 saves ~2% of the time and costs ~3% bytes


class WriteConflictError(PulseError, RuntimeError):
    """The user's item kept changing under us (or kept being throttled) through every attempt."""


class _Unknown:
    """Marks 'not read yet' for update(known=...): None already means 'no item'."""


UNKNOWN = _Unknown()


class InterestStore(Protocol):
    def get(self, user_id: str) -> UserInterest | None: ...

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserInterest]:
        """The users that exist among user_ids, read together (one batch read instead of one read each)."""
        ...

    def update(self, user_id: str, mutate: Callable[[UserInterest], Result],
               known: UserInterest | None | _Unknown = UNKNOWN) -> Result:
        """Load (or create) the user, mutate it, write it back once if it changed; retry on conflict.
        `known`: the user as just read (None: no item), used for the first attempt instead of a read."""
        ...

    def delete(self, user_id: str) -> bool:
        """Replace the user with a tombstone carrying the deletion time; True if there was state to forget."""
        ...


# --- DynamoDB -------------------------------------------------------------------------------------


class ScaleAttribute(MapAttribute[str, Any]):
    """One time scale's residual: its length exactly, its direction in float16 (half the bytes of float32; each
    component off by at most 2^-11 of the vector's length, and no overflow whatever the length)."""

    name = UnicodeAttribute()
    length = NumberAttribute(null=True)
    direction = BinaryAttribute(legacy_encoding=False, null=True)  # float16 little-endian, unit length
    vector = BinaryAttribute(legacy_encoding=False, null=True)  # float32: items written before `direction`
    t = NumberAttribute(null=True)


# DynamoDB refuses numbers below 1e-130 in magnitude (a ValidationException no retry mends): a residual that
# has decayed below float32's smallest normal number (what the float32 form stored as zeros) is stored as zero.
SMALLEST_LENGTH = float(np.finfo(np.float32).tiny)


def pack_scale(name: str, state: ScaleState) -> ScaleAttribute:
    length = float(np.linalg.norm(state.vector))
    if not length >= SMALLEST_LENGTH:
        length = 0.0
    # a zero vector keeps its dimension
    direction = state.vector / length if length > 0 else np.zeros_like(state.vector)
    # pynamodb leaves MapAttribute.__init__ unannotated
    return ScaleAttribute(name=name, length=length, direction=direction.astype("<f2").tobytes(),  # type: ignore[no-untyped-call]
                          t=state.t)


def read_scale(scale: ScaleAttribute) -> ScaleState:
    if scale.direction is None:  # written before `direction`
        return ScaleState(np.frombuffer(scale.vector, dtype="<f4").astype(np.float64), scale.t)
    return ScaleState(np.frombuffer(scale.direction, dtype="<f2").astype(np.float64) * float(scale.length), scale.t)


class UserInterestItem(Model):
    """The DynamoDB item. The table's key schema and TTL attribute are declared in template.yaml."""

    class Meta:
        table_name = "pulse-interest"

    user_id = UnicodeAttribute(hash_key=True)
    version = VersionAttribute()
    scales = ListAttribute(of=ScaleAttribute, default=list)
    # zlib of compact JSON {"history": [[event time, item_id, type, value], ...] oldest first,
    # "recent_items": {item_id: event time}, "applied_sequence": {shard_id: sequence number}} (pack_state)
    state = BinaryAttribute(legacy_encoding=False, null=True)
    event_digests = BinaryAttribute(legacy_encoding=False, null=True)  # DIGEST_BYTES-byte digests, oldest first
    # Items written before `state` keep these as plain attributes until their next write (read_state, _digests).
    recent_event_ids = BinaryAttribute(legacy_encoding=False, null=True)  # 8-byte digests
    recent_items = UnicodeAttribute(null=True)
    history = UnicodeAttribute(null=True)
    applied_sequence: MapAttribute[str, str] = MapAttribute(null=True)  # type: ignore[no-untyped-call]
    event_count = NumberAttribute(default=0)
    first_event_ts = NumberAttribute(null=True)
    last_event_ts = NumberAttribute(null=True)
    updated_at = NumberAttribute(default=0)
    expires_at = TTLAttribute(null=True)
    forgotten_at = NumberAttribute(null=True)  # a deletion's time: older events are ignored


@lru_cache(maxsize=8)
def user_interest_model(table_name: str) -> type[UserInterestItem]:
    """The model bound to a table, created lazily so tests and the local stack can point it anywhere."""
    meta = type("Meta", (), {"table_name": table_name, "max_retry_attempts": 8, "base_backoff_ms": 25})
    return type("BoundUserInterestItem", (UserInterestItem,), {"Meta": meta})


on_reset(user_interest_model.cache_clear)  # PynamoDB binds the model's connection at first use


class DynamoInterestStore:
    def __init__(self, table_name: str, *, ttl_days: float, attempts: int = WRITE_ATTEMPTS,
                 clock: Callable[[], float] = time.time, tombstone_days: float | None = None):
        self.model = user_interest_model(table_name)
        self.ttl = timedelta(days=ttl_days)
        self.tombstone_ttl = timedelta(days=ttl_days if tombstone_days is None else tombstone_days)
        self.attempts = attempts
        self.clock = clock
        self.conflicts = 0

    def get(self, user_id: str) -> UserInterest | None:
        try:
            return _to_domain(self.model.get(user_id, consistent_read=True))
        except DoesNotExist:
            return None

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserInterest]:
        """Consistent BatchGetItem (100 keys a request; PynamoDB re-asks for unprocessed keys)."""
        return {item.user_id: _to_domain(item) for item in self.model.batch_get(list(user_ids), consistent_read=True)}

    def update(self, user_id: str, mutate: Callable[[UserInterest], Result],
               known: UserInterest | None | _Unknown = UNKNOWN) -> Result:
        return _optimistic_update(user_id, mutate, known, self.attempts, self.get, self._write)

    def _write(self, user: UserInterest, attempt: int) -> bool:
        try:
            _to_item(self.model, user, self.clock(), self.ttl, self.tombstone_ttl).save()  # conditional on version
            return True
        except PutError as error:
            if error.cause_response_code not in RETRYABLE_WRITE_ERRORS:
                raise
            self.conflicts += 1
            _backoff(attempt)
            return False

    def delete(self, user_id: str) -> bool:
        """The tombstone expires `tombstone_days` after the deletion (a returning user's item not before)."""
        return self.update(user_id, lambda user: forget_user(user, self.clock())).had_state


RETRYABLE_WRITE_ERRORS = frozenset({
    "ConditionalCheckFailedException", "ProvisionedThroughputExceededException", "ThrottlingException",
    "RequestLimitExceeded", "TransactionConflictException",
})


def _optimistic_update[Result: Outcome](user_id: str, mutate: Callable[[UserInterest], Result],
                       known: UserInterest | None | _Unknown, attempts: int,
                       read: Callable[[str], UserInterest | None],
                       write: Callable[[UserInterest, int], bool]) -> Result:
    """Read (the first time: `known` when given), mutate, write if changed; `write` answers False when the
    stored version moved on, and the next attempt reads again."""
    for attempt in range(attempts):
        user = read(user_id) if attempt > 0 or isinstance(known, _Unknown) else known
        user = user or UserInterest(user_id=user_id, scales={})
        result = mutate(user)
        if not result.changed or write(user, attempt):
            return result
    raise WriteConflictError(f"user item still conflicting or throttled after {attempts} attempts")


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))


def pack_state(user: UserInterest) -> bytes | None:
    """The history, recent items and stream positions as stored: zlib of one compact JSON object in columns
    (times as differences, ids, types and values each in a list, which compress far better than rows), its
    empty parts left out; None when all three are empty. read_state gives back exactly what went in."""
    body: dict[str, Any] = {}
    if user.history:
        body["history"] = {**_pack_times([entry.ts for entry in user.history]),
                           "item_id": [entry.item_id for entry in user.history],
                           "type": [entry.type for entry in user.history],
                           "value": [entry.value for entry in user.history]}
    if user.recent_items:
        body["recent_items"] = {"item_id": list(user.recent_items), **_pack_times(list(user.recent_items.values()))}
    if user.applied_sequence:
        body["applied_sequence"] = user.applied_sequence
    if not body:
        return None
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return zlib.compress(encoded, STATE_COMPRESSION_LEVEL)


def read_state(item: UserInterestItem) -> tuple[list[Engagement], dict[str, float], dict[str, str]]:
    """The history, recent items and stream positions of an item: from `state` (pack_state), or from the plain
    attributes of an item written before it."""
    if item.state:
        body = json.loads(zlib.decompress(item.state))
        history, recent = body.get("history"), body.get("recent_items")
        return ([Engagement(*row) for row in zip(_unpack_times(history), history["item_id"], history["type"],
                                                  history["value"], strict=True)] if history else [],
                dict(zip(recent["item_id"], _unpack_times(recent), strict=True)) if recent else {},
                body.get("applied_sequence", {}))
    sequences = item.applied_sequence.as_dict() if item.applied_sequence else {}  # type: ignore[no-untyped-call]  # pynamodb: as_dict is unannotated
    return ([Engagement(*row) for row in json.loads(item.history)] if item.history else [],
            json.loads(item.recent_items) if item.recent_items else {},
            {str(shard): str(sequence) for shard, sequence in sequences.items()})


def _pack_times(times: list[float]) -> dict[str, list[float]]:
    """`ts_steps` (the first time, then each difference to the one before) when adding them up gives every time
    back bit for bit; else the times themselves as `ts`."""
    steps = [times[0], *(later - earlier for earlier, later in itertools.pairwise(times))]
    return {"ts_steps": steps} if list(itertools.accumulate(steps)) == times else {"ts": times}


def _unpack_times(column: dict[str, Any]) -> list[float]:
    return list(itertools.accumulate(column["ts_steps"])) if "ts_steps" in column else list(column["ts"])


def _digests(item: UserInterestItem) -> list[bytes]:
    """The de-duplication window, oldest first; an earlier release's 8-byte digests cut to their first bytes."""
    if item.event_digests:
        stored, width = item.event_digests, DIGEST_BYTES
    else:
        stored, width = item.recent_event_ids or b"", LEGACY_DIGEST_BYTES
    return [stored[start:start + DIGEST_BYTES] for start in range(0, len(stored), width)]


def _to_domain(item: UserInterestItem) -> UserInterest:
    history, recent_items, applied_sequence = read_state(item)
    return UserInterest(
        user_id=item.user_id,
        scales={scale.name: read_scale(scale) for scale in item.scales},
        recent_items=recent_items,
        history=history,
        recent_event_ids=_digests(item),
        applied_sequence=applied_sequence,
        event_count=int(item.event_count),
        first_event_ts=item.first_event_ts,
        last_event_ts=item.last_event_ts,
        version=item.version,
        forgotten_at=item.forgotten_at,
    )


def _to_item(model: type[UserInterestItem], user: UserInterest, now: float, ttl: timedelta,
             tombstone_ttl: timedelta | None = None) -> UserInterestItem:
    # The type: ignores below: pynamodb leaves MapAttribute.__init__ unannotated.
    item = model(
        user.user_id,
        scales=[pack_scale(name, state) for name, state in user.scales.items()],
        state=pack_state(user),
        event_digests=b"".join(user.recent_event_ids) or None,
        event_count=user.event_count,
        first_event_ts=user.first_event_ts,
        last_event_ts=user.last_event_ts,
        updated_at=now,
        expires_at=_expiry(user, now, ttl, ttl if tombstone_ttl is None else tombstone_ttl),
        forgotten_at=user.forgotten_at,
    )
    if user.version is not None:
        item.version = user.version  # PynamoDB then writes only if the stored version is still this one
    return item


def dynamodb_item_bytes(serialized: dict[str, Any]) -> int:
    """DynamoDB's item size of a serialized item (PynamoDB's `serialize()`), by AWS's rules: attribute names
    plus values (strings UTF-8 and binary by length, numbers 1 byte per two significant digits plus 1, maps and
    lists 3 bytes plus 1 per element, map keys counted like names)."""
    def value_bytes(value: dict[str, Any]) -> int:
        (kind, raw), = value.items()
        if kind == "S":
            return len(raw.encode("utf-8"))
        if kind == "B":
            return len(raw) if isinstance(raw, bytes | bytearray) else len(base64.b64decode(raw))  # base64 in JSON
        if kind == "N":
            return (len(raw.lstrip("-").replace(".", "").strip("0")) + 1) // 2 + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(name.encode()) + value_bytes(inner) + 1 for name, inner in raw.items())
        if kind == "L":
            return 3 + sum(value_bytes(inner) + 1 for inner in raw)
        raise ValueError(f"unknown DynamoDB type {kind}")

    return sum(len(name.encode()) + value_bytes(value) for name, value in serialized.items())


def _expiry(user: UserInterest, now: float, ttl: timedelta, tombstone_ttl: timedelta) -> datetime:
    """An active user: `ttl` after this write; a tombstone: `tombstone_ttl` after the deletion; both: the later."""
    expiries = [datetime.fromtimestamp(now, tz=UTC) + ttl] if user.has_state or user.forgotten_at is None else []
    if user.forgotten_at is not None:
        expiries.append(datetime.fromtimestamp(user.forgotten_at, tz=UTC) + tombstone_ttl)
    return max(expiries)


# --- In memory (unit tests, benchmarks) -----------------------------------------------------------


class InMemoryInterestStore:
    """Same semantics as DynamoInterestStore (copies in and out, version bumps, counted writes)."""

    def __init__(self, *, attempts: int = WRITE_ATTEMPTS, clock: Callable[[], float] = time.time) -> None:
        self.items: dict[str, UserInterest] = {}
        self.writes = 0
        self.conflicts = 0
        self.attempts = attempts
        self.clock = clock
        self._lock = threading.Lock()

    def get(self, user_id: str) -> UserInterest | None:
        with self._lock:
            found = self.items.get(user_id)
            return copy.deepcopy(found) if found is not None else None

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserInterest]:
        with self._lock:
            return {user_id: copy.deepcopy(self.items[user_id]) for user_id in user_ids if user_id in self.items}

    def update(self, user_id: str, mutate: Callable[[UserInterest], Result],
               known: UserInterest | None | _Unknown = UNKNOWN) -> Result:
        known = copy.deepcopy(known) if isinstance(known, UserInterest) else known
        return _optimistic_update(user_id, mutate, known, self.attempts, self.get, self._write)

    def _write(self, user: UserInterest, attempt: int) -> bool:
        with self._lock:
            current = self.items.get(user.user_id)
            if (current.version if current else None) != user.version:
                self.conflicts += 1
                return False
            user.version = (user.version or 0) + 1
            self.items[user.user_id] = copy.deepcopy(user)
            self.writes += 1
            return True

    def delete(self, user_id: str) -> bool:
        return self.update(user_id, lambda user: forget_user(user, self.clock())).had_state
