"""The interest model (README, "The interest model"): exponentially time-decayed, multi-timescale interest.

A user's interest on time scale s (half-life h) as of time `at` is sum_i w_i·2^(-(at-t_i)/h)·e_i over their
events. It is kept in a form that no catalogue upload or training can strand:

- the history: the newest item events themselves (item id, time, type, value). They are weighed and embedded
  when a question is asked, in the item space that serves then, with the settings that serve then;
- per scale, a residual vector in the encoder's own (text) space, which never changes: search texts, items the
  catalogue did not know, and item events that left the history (by their text vector). Residual fold:
    t >= T: v <- v·2^(-(t-T)/h) + w·e, T <- t
    t <  T: v <- v + w·2^(-(T-t)/h)·e
  whatever order events arrive in.
Everything here is pure NumPy: no AWS, no clocks.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pulse.events.behaviour import BehaviourEvent
from pulse.events.stream import StreamPosition

# Bounds of one user's state, so that no user's item can outgrow DynamoDB's 400 KB (README, "Limits": the worst
# case and its formula; tests/unit/interest/test_state_bounds.py measures it).
MAX_RECENT_ITEMS = 1000
MAX_HISTORY_EVENTS = 1000
MAX_DEDUP_WINDOW = 4096
MAX_TIME_SCALES = 4
MAX_SCALE_NAME_BYTES = 32
MAX_TRACKED_SHARDS = 16
HISTORY_MAX_BYTES = 192 * 1024  # the history as stored (compact JSON); the oldest entries fold out beyond it
RECENT_ITEMS_MAX_BYTES = 144 * 1024  # likewise the recent items; the oldest are forgotten beyond it


@dataclass(slots=True)
class ScaleState:
    """One time scale: v (float64 while computing) decayed to time t; t is None while empty."""

    vector: NDArray[np.float64]
    t: float | None = None

    @classmethod
    def empty(cls, dim: int) -> ScaleState:
        return cls(np.zeros(dim, dtype=np.float64), None)


def decay_factor(elapsed_seconds: float | NDArray[np.float64], half_life_seconds: float
                 ) -> float | NDArray[np.float64]:
    factor: float | NDArray[np.float64] = np.exp2(-np.asarray(elapsed_seconds, dtype=np.float64) / half_life_seconds)
    return factor


def fold_events(state: ScaleState, times: NDArray[Any], weights: NDArray[Any], embeddings: NDArray[Any],
                half_life_seconds: float) -> ScaleState:
    """Apply many events at once; equal (up to rounding) to applying them one by one in any order."""
    if len(times) == 0:
        return state
    times = np.asarray(times, dtype=np.float64)
    latest = float(times.max())
    horizon = latest if state.t is None else max(state.t, latest)
    vector = state.vector.astype(np.float64, copy=True)
    if state.t is not None and horizon > state.t:
        vector *= decay_factor(horizon - state.t, half_life_seconds)
    coefficients = np.asarray(weights, dtype=np.float64) * decay_factor(horizon - times, half_life_seconds)
    vector += coefficients @ np.asarray(embeddings, dtype=np.float64)
    return ScaleState(vector, horizon)


def decay_to(state: ScaleState, at: float, half_life_seconds: float) -> NDArray[np.float64]:
    """The scale's vector as of `at`. Asking before T gives the state at T (events are never un-applied)."""
    if state.t is None or at <= state.t:
        return state.vector.copy()
    return state.vector * decay_factor(at - state.t, half_life_seconds)


def blend(vectors: Mapping[str, NDArray[Any]], blend_weights: Mapping[str, float]) -> NDArray[Any]:
    """Weighted sum of the per-scale vectors, each first scaled to unit length so scales compare.

    A scale's length still matters through a soft cap: a scale whose interest has decayed far below one
    event's worth fades out instead of being re-inflated to full strength.
    """
    total = None
    for name, vector in vectors.items():
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            continue
        contribution = blend_weights.get(name, 0.0) * min(1.0, norm) / norm * vector
        total = contribution if total is None else total + contribution
    if total is None:
        return np.zeros(next(iter(vectors.values())).shape, dtype=np.float64) if vectors else np.zeros(0)
    return total


@dataclass(frozen=True, slots=True)
class TypeWeights:
    """How much each behaviour counts; negative for dislike/skip. Ratings and dwell scale the weight.

    rating_weighting "stars": a rating's stars scale its weight (below rating_neutral it counts against);
    "flat": every rating counts its type weight (a rating says the user engaged with the item).
    """

    by_type: Mapping[str, float]
    rating_neutral: float = 2.5
    rating_max: float = 5.0
    full_dwell_seconds: float = 30.0
    rating_weighting: str = "stars"

    def weight(self, event: BehaviourEvent) -> float:
        return self.weight_of(event.type, event.value)

    def weight_of(self, event_type: str, value: float | None) -> float:
        base = self.by_type[event_type]
        if event_type == "rate" and value is not None and self.rating_weighting == "stars":
            span = self.rating_max - self.rating_neutral
            return base * float(np.clip((value - self.rating_neutral) / span, -1.0, 1.0))
        if event_type == "view" and value is not None:
            return base * float(np.clip(value / self.full_dwell_seconds, 0.1, 1.0))
        return base


DEFAULT_TYPE_WEIGHTS: dict[str, float] = {
    "view": 0.5, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0, "like": 2.0,
    "dislike": -2.0, "skip": -0.5, "rate": 2.0, "search": 1.0,
}
RATING_WEIGHTINGS = ("stars", "flat")
# Personal scores are cosines (at most 1); a popularity weight above 1 would let the trend outvote any interest.
MAX_POPULARITY_WEIGHT = 1.0
# Interest weaker than this has faded: the user is served the popular items (PULSE_MIN_STRENGTH's default).
MIN_STRENGTH = 1e-3
# Conditional writes of one user's state before its records are retried (PULSE_WRITE_ATTEMPTS's default).
WRITE_ATTEMPTS = 6


# Bytes of an event_id's digest in the de-duplication window. A fresh event is taken for one of the window's
# `dedup_window` events with probability dedup_window / 2^56 (7e-15 at 512): never, in practice, at any rate.
DIGEST_BYTES = 7


def event_digest(event_id: str) -> bytes:
    """7-byte digest of an event_id: the de-duplication window stores these, not the ids. The first 7 bytes of
    the 8-byte BLAKE2b digest that items written by the earlier release hold, so their windows still match."""
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()[:DIGEST_BYTES]


@dataclass(frozen=True, slots=True)
class EmbeddedEvent:
    """A valid event ready to apply: its stream position, weight and, for texts, the encoder's vector.

    `embedding` None: an item event of the catalogue, kept in the history and embedded at query time.
    A vector: the encoder's vector of the event's text (a search, an item the catalogue does not know yet),
    folded into the text-space residual at once.
    """

    event: BehaviourEvent
    position: StreamPosition | None
    weight: float
    embedding: NDArray[np.float64] | None


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class Engagement:
    """One item event of the history (ordered by time, then the other fields, so any order of arrival keeps
    the same newest ones; an event without a value sorts before the same event with one)."""

    ts: float
    item_id: str
    type: str
    value: float | None = None

    def __lt__(self, other: Engagement) -> bool:
        return self._order() < other._order()

    def _order(self) -> tuple[float, str, str, bool, float]:
        return self.ts, self.item_id, self.type, self.value is not None, 0.0 if self.value is None else self.value

    def weight(self, weights: TypeWeights) -> float:
        return weights.weight_of(self.type, self.value)


@dataclass(slots=True)
class UserInterest:
    """Everything Pulse keeps about one user (the DynamoDB item, in domain form)."""

    user_id: str
    scales: dict[str, ScaleState]  # text-space residual per time scale
    history: list[Engagement] = field(default_factory=list)  # newest item events, oldest first
    recent_items: dict[str, float] = field(default_factory=dict)  # item_id -> latest event time
    recent_event_ids: list[bytes] = field(default_factory=list)  # oldest first
    applied_sequence: dict[str, str] = field(default_factory=dict)  # shard_id -> highest applied seq
    event_count: int = 0
    first_event_ts: float | None = None
    last_event_ts: float | None = None
    version: int | None = None
    # Set by a deletion (the server's clock): events dated at or before it are never applied again.
    forgotten_at: float | None = None

    @property
    def has_state(self) -> bool:
        """False for a deleted user's tombstone (and a user not created yet)."""
        return self.event_count > 0

    @classmethod
    def new(cls, user_id: str, scale_names: Sequence[str], dim: int) -> UserInterest:
        return cls(user_id=user_id, scales={name: ScaleState.empty(dim) for name in scale_names})


@dataclass(frozen=True, slots=True)
class InterestSettings:
    half_lives: Mapping[str, float]  # scale name -> half-life in seconds
    recent_items_limit: int = 200
    dedup_window: int = 512
    max_tracked_shards: int = MAX_TRACKED_SHARDS
    history_limit: int = 200
    type_weights: TypeWeights = field(default_factory=lambda: TypeWeights(DEFAULT_TYPE_WEIGHTS))


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    forgotten: int = 0  # events dated at or before the user's deletion: ignored

    @property
    def changed(self) -> bool:
        return self.applied > 0


@dataclass(slots=True)
class ForgetResult:
    had_state: bool
    changed: bool = True  # the tombstone is always written: it moves the deletion time forward


def forget_user(user: UserInterest, at: float) -> ForgetResult:
    """Turn the user into a tombstone: nothing kept but the deletion time (the later of `at` and an earlier
    deletion's). Mutates `user` in place; its version stays, so the write is conditional on what was read."""
    result = ForgetResult(had_state=user.has_state)
    forgotten_at = at if user.forgotten_at is None else max(at, user.forgotten_at)
    user.scales, user.history, user.recent_items, user.recent_event_ids = {}, [], {}, []
    user.applied_sequence, user.event_count, user.first_event_ts, user.last_event_ts = {}, 0, None, None
    user.forgotten_at = forgotten_at
    return result


TextVectors = Callable[[Iterable[str]], Mapping[str, NDArray[Any]]]


def apply_user_events(user: UserInterest, batch: Sequence[EmbeddedEvent], settings: InterestSettings,
                      text_vectors: TextVectors | None = None) -> ApplyResult:
    """Fold one user's events of a batch into their state, exactly once.

    Skips events dated at or before the user's deletion (`forgotten_at`: redelivered, retried or in flight
    when the user was deleted), records at or below the shard's applied sequence number (a batch delivered
    again) and event_ids already in the de-duplication window (a producer retry). Item events join the
    history; what leaves it (beyond `history_limit`) is folded into the residual by the item's text vector
    (`text_vectors`, from the catalogue). Mutates `user` in place.
    """
    result = ApplyResult()
    seen_ids = set(user.recent_event_ids)
    fresh: list[EmbeddedEvent] = []
    for item in sorted(batch, key=_stream_order):
        if user.forgotten_at is not None and item.event.ts <= user.forgotten_at:
            result.forgotten += 1
            continue
        if item.position is not None and _already_applied(user, item.position):
            result.redelivered += 1
            continue
        digest = event_digest(item.event.event_id)
        if digest in seen_ids:
            result.duplicates += 1
        else:
            seen_ids.add(digest)
            user.recent_event_ids.append(digest)
            fresh.append(item)
        if item.position is not None:
            user.applied_sequence[item.position.shard_id] = item.position.sequence_number
    if not fresh:
        return result
    _fold_into_scales(user, [item for item in fresh if item.embedding is not None], settings)
    _extend_history(user, [item for item in fresh if item.embedding is None], settings, text_vectors)
    _remember_items(user, fresh, settings.recent_items_limit)
    del user.recent_event_ids[: max(0, len(user.recent_event_ids) - settings.dedup_window)]
    _forget_old_shards(user, settings.max_tracked_shards)
    times = [item.event.ts for item in fresh]
    user.event_count += len(fresh)
    user.first_event_ts = min(times + ([user.first_event_ts] if user.first_event_ts is not None else []))
    user.last_event_ts = max(times + ([user.last_event_ts] if user.last_event_ts is not None else []))
    result.applied = len(fresh)
    return result


def _fold_into_scales(user: UserInterest, fresh: Sequence[EmbeddedEvent], settings: InterestSettings) -> None:
    if fresh:
        _fold(user, np.array([item.event.ts for item in fresh], dtype=np.float64),
              np.array([item.weight for item in fresh], dtype=np.float64),
              np.stack([item.embedding for item in fresh if item.embedding is not None]), settings)


def _extend_history(user: UserInterest, items: Sequence[EmbeddedEvent], settings: InterestSettings,
                    text_vectors: TextVectors | None) -> None:
    if not items:
        return
    engagements = []
    for item in items:  # events without an embedding: catalogue item events, so each has an item_id
        assert item.event.item_id is not None
        engagements.append(Engagement(item.event.ts, item.event.item_id, item.event.type, item.event.value))
    user.history = sorted(user.history + engagements)
    overflow = len(user.history) - settings.history_limit
    # One encoding tells whether the budget holds (the rows' sizes sum to the whole's bytes - 1); row by row
    # only when it does not.
    if len(history_json(user.history).encode("utf-8")) - 1 > HISTORY_MAX_BYTES:
        overflow = max(overflow, _oldest_over_budget([_json_bytes(_history_row(entry)) for entry in user.history],
                                                     HISTORY_MAX_BYTES))
    if overflow <= 0:
        return
    leaving, user.history = user.history[:overflow], user.history[overflow:]
    vectors = text_vectors([entry.item_id for entry in leaving]) if text_vectors is not None else {}
    kept = [entry for entry in leaving if entry.item_id in vectors]  # an item gone from the catalogue: dropped
    if kept:
        _fold(user, np.array([entry.ts for entry in kept], dtype=np.float64),
              np.array([entry.weight(settings.type_weights) for entry in kept], dtype=np.float64),
              np.stack([np.asarray(vectors[entry.item_id], dtype=np.float64) for entry in kept]), settings)


def _fold(user: UserInterest, times: NDArray[Any], weights: NDArray[Any], embeddings: NDArray[Any],
          settings: InterestSettings) -> None:
    for name, half_life in settings.half_lives.items():
        state = user.scales.get(name)
        if state is None or state.vector.shape != (embeddings.shape[1],):
            # No state yet, or a vector of another encoder (or written before the residual was text-only).
            state = ScaleState.empty(embeddings.shape[1])
        user.scales[name] = fold_events(state, times, weights, embeddings, half_life)
    for name in [name for name in user.scales if name not in settings.half_lives]:
        del user.scales[name]  # a scale no longer served: dead weight in the item


def _remember_items(user: UserInterest, fresh: Sequence[EmbeddedEvent], limit: int) -> None:
    for item in fresh:
        item_id = item.event.item_id
        if item_id is not None:
            user.recent_items[item_id] = max(item.event.ts, user.recent_items.get(item_id, item.event.ts))
    count = len(user.recent_items)
    # Within the limit and the budget (pairs as ["id",ts], take 2 bytes more each than "id":ts in the object):
    # nothing to sort or measure.
    if count <= limit and len(recent_items_json(user.recent_items).encode("utf-8")) + 2 * count - 1 \
            <= RECENT_ITEMS_MAX_BYTES:
        return
    newest = sorted(user.recent_items.items(), key=lambda pair: pair[1], reverse=True)[:limit]
    sizes = [_json_bytes(pair) for pair in reversed(newest)]  # "id":ts, -> about a pair's bytes
    newest = newest[:len(newest) - _oldest_over_budget(sizes, RECENT_ITEMS_MAX_BYTES)]
    if len(newest) < len(user.recent_items):
        user.recent_items = dict(newest)


def history_json(history: Sequence[Engagement]) -> str:
    """The history as stored: compact JSON [[ts, item_id, type, value], ...], oldest first."""
    return json.dumps([_history_row(entry) for entry in history], separators=(",", ":"), ensure_ascii=False)


def recent_items_json(recent_items: Mapping[str, float]) -> str:
    """The recent items as stored: compact JSON {item_id: latest event time}."""
    return json.dumps(recent_items, separators=(",", ":"), ensure_ascii=False)


def _history_row(entry: Engagement) -> list[Any]:
    return [entry.ts, entry.item_id, entry.type, entry.value]


def _json_bytes(value: Any) -> int:
    """UTF-8 bytes of `value` as compact JSON, plus one for the separator."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")) + 1


def _oldest_over_budget(sizes: Sequence[int], budget: int) -> int:
    """How many of the oldest entries (sizes oldest first) must go so that the rest fit in `budget` bytes."""
    total = 0
    for kept, size in enumerate(reversed(sizes)):
        total += size
        if total > budget:
            return len(sizes) - kept
    return 0


def _already_applied(user: UserInterest, position: StreamPosition) -> bool:
    applied = user.applied_sequence.get(position.shard_id)
    return applied is not None and int(position.sequence_number) <= int(applied)


def _forget_old_shards(user: UserInterest, limit: int) -> None:
    if len(user.applied_sequence) > limit:
        kept = sorted(user.applied_sequence.items(), key=lambda pair: int(pair[1]), reverse=True)[:limit]
        user.applied_sequence = dict(kept)


def _stream_order(item: EmbeddedEvent) -> tuple[str | int, ...]:
    """Events without a stream position (the offline tools') first, in the order given; then by shard and
    sequence number (an empty tuple sorts before every other)."""
    if item.position is None:
        return ()
    return (item.position.shard_id, int(item.position.sequence_number))
