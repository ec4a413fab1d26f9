"""One validated configuration object, read from the environment once per container."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pulse.authorization import AUTH_MODES, AccessPolicy
from pulse.errors import PulseError
from pulse.events.behaviour import DEFAULT_MAX_CLOCK_SKEW_SECONDS, EVENT_TYPES, TimeLimits
from pulse.interest.model import (
    DEFAULT_TYPE_WEIGHTS,
    MAX_DEDUP_WINDOW,
    MAX_HISTORY_EVENTS,
    MAX_POPULARITY_WEIGHT,
    MAX_RECENT_ITEMS,
    MAX_SCALE_NAME_BYTES,
    MAX_TIME_SCALES,
    RATING_WEIGHTINGS,
    InterestSettings,
    TypeWeights,
)

DEFAULT_TABLE_NAME = "pulse-interest"
DEFAULT_HALF_LIVES = {"short": 1800.0, "long": 30 * 86400.0}
DEFAULT_BLEND = {"short": 0.5, "long": 0.5}
MAX_CLOCK_SKEW_SECONDS = 86400.0  # the template's MaxValue: a day ahead is already a broken clock


# Settings a training learns unless the deployment sets them (template parameter -> environment variable).
PINNABLE = {"half_lives": "PULSE_HALF_LIVES", "blend_weights": "PULSE_BLEND_WEIGHTS",
            "rating_weighting": "PULSE_RATING_WEIGHTING", "blocks": "PULSE_TEXT_WEIGHT PULSE_COLLAB_WEIGHT",
            "popularity_weight": "PULSE_POPULARITY_WEIGHT"}


@dataclass(frozen=True)
class TrainingPolicy:
    """When a training may publish. Defaults: a collaborative space needs co-occurrence to factorize, so fewer
    warm items than its dimensions, or a thousand events, give a degenerate space (neighbours that merely shared
    one user); 50 users and 20 held-out users keep one person's taste from defining it and the gate above noise.
    A candidate is refused when its NDCG@10 on the held-out half is lower than the serving version's by more
    than `tolerance` and by more than 1.64 standard errors of the paired difference (one-sided 95%)."""

    min_events: int = 1000
    min_users: int = 50
    min_warm_items: int | None = None  # None: the collaborative dimensions
    min_held_out_users: int = 20
    tolerance: float = 0.01
    force: bool = False
    max_held_out_users: int = 2000


class ConfigurationError(PulseError, ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    table_name: str = DEFAULT_TABLE_NAME
    dead_letter_queue_url: str | None = None
    half_lives: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_HALF_LIVES))
    blend_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BLEND))
    type_weights: TypeWeights = field(default_factory=lambda: TypeWeights(dict(DEFAULT_TYPE_WEIGHTS)))
    recent_items_limit: int = 200
    dedup_window: int = 512
    ttl_days: float = 180.0
    encoder_threads: int = 1
    write_attempts: int = 6
    write_concurrency: int = 8
    bucket: str | None = None
    catalog_prefix: str = "catalog/"
    catalog_check_seconds: float = 30.0
    stream_name: str | None = None
    min_strength: float = 1e-3
    catalog_skip_invalid: bool = False
    training_days: int = 365
    training_max_events: int = 1_000_000
    collab_dim: int = 128
    text_weight: float = 0.25
    collab_weight: float = 0.75
    history_limit: int = 200
    # The cosine's companion: weight x the serving version's trending prior (0 until a training learns one).
    popularity_weight: float = 0.0
    max_clock_skew_seconds: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS
    max_event_age_days: float = 0.0  # 0: no limit (replays of old data)
    training_policy: TrainingPolicy = field(default_factory=TrainingPolicy)
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # Interest settings the deployment set itself ("half_lives", "blend_weights", "rating_weighting"): these win
    # over what a training learned; the others follow the serving catalogue version.
    pinned: frozenset[str] = frozenset()

    @property
    def interest(self) -> InterestSettings:
        return InterestSettings(half_lives=self.half_lives, recent_items_limit=self.recent_items_limit,
                                dedup_window=self.dedup_window, history_limit=self.history_limit,
                                type_weights=self.type_weights)

    @property
    def tombstone_days(self) -> float:
        """How long a deleted user's tombstone is kept: while an event dated before the deletion can still be
        accepted (MaxEventAgeDays, plus a day for the functions' clocks), else InactiveUserTtlDays."""
        return self.max_event_age_days + 1 if self.max_event_age_days > 0 else self.ttl_days

    def time_limits(self, now: float) -> TimeLimits:
        """How far from `now` (this function's clock) an event may be dated."""
        return TimeLimits(now, self.max_clock_skew_seconds,
                          self.max_event_age_days * 86400 if self.max_event_age_days > 0 else None)

    def serving(self, learned: Mapping[str, Any] | None) -> Settings:
        """These settings with what the serving version learned, except what the deployment pinned."""
        if not learned:
            return self
        changes: dict[str, Any] = {}
        if "half_lives" not in self.pinned and learned.get("half_lives"):
            changes["half_lives"] = {name: float(value) for name, value in learned["half_lives"].items()}
        scales = set(changes.get("half_lives", self.half_lives))
        if "blend_weights" not in self.pinned and learned.get("blend_weights") \
                and set(learned["blend_weights"]) == scales:
            changes["blend_weights"] = {name: float(value) for name, value in learned["blend_weights"].items()}
        elif set(self.blend_weights) != scales:
            changes["blend_weights"] = {name: DEFAULT_BLEND.get(name, 1.0) for name in scales}
        if "rating_weighting" not in self.pinned and learned.get("rating_weighting") in RATING_WEIGHTINGS:
            changes["type_weights"] = replace(self.type_weights, rating_weighting=learned["rating_weighting"])
        if "popularity_weight" not in self.pinned and "popularity_weight" in learned:
            changes["popularity_weight"] = float(learned["popularity_weight"])
        return replace(self, **changes) if changes else self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        half_lives = _named_numbers(env, "PULSE_HALF_LIVES", DEFAULT_HALF_LIVES, positive=True)
        if len(half_lives) > MAX_TIME_SCALES or any(len(name.encode()) > MAX_SCALE_NAME_BYTES for name in half_lives):
            raise ConfigurationError(f"PULSE_HALF_LIVES may name at most {MAX_TIME_SCALES} time scales of at most "
                                     f"{MAX_SCALE_NAME_BYTES} bytes each (they size every user's item)")
        blend = _named_numbers(env, "PULSE_BLEND_WEIGHTS", {name: DEFAULT_BLEND.get(name, 1.0)
                                                           for name in half_lives}, positive=False)
        unknown = sorted(set(blend) - set(half_lives))
        if unknown:
            raise ConfigurationError(f"PULSE_BLEND_WEIGHTS names scales {unknown} that PULSE_HALF_LIVES "
                                     f"does not define ({sorted(half_lives)})")
        by_type = {**DEFAULT_TYPE_WEIGHTS, **_named_numbers(env, "PULSE_TYPE_WEIGHTS", {}, positive=False)}
        unknown = sorted(set(by_type) - set(EVENT_TYPES))
        if unknown:
            raise ConfigurationError(f"PULSE_TYPE_WEIGHTS names unknown event types {unknown}; "
                                     f"known: {', '.join(EVENT_TYPES)}")
        rating_neutral = _number(env, "PULSE_RATING_NEUTRAL", 2.5)
        rating_max = _number(env, "PULSE_RATING_MAX", 5.0)
        if rating_max <= rating_neutral:
            raise ConfigurationError("PULSE_RATING_MAX must be greater than PULSE_RATING_NEUTRAL")
        rating_weighting = (env.get("PULSE_RATING_WEIGHTING") or "").strip().lower() or "stars"
        if rating_weighting not in RATING_WEIGHTINGS:
            raise ConfigurationError(f"PULSE_RATING_WEIGHTING={rating_weighting!r} must be one of "
                                     f"{', '.join(RATING_WEIGHTINGS)}")
        return cls(
            table_name=env.get("PULSE_TABLE", DEFAULT_TABLE_NAME),
            dead_letter_queue_url=env.get("PULSE_DLQ_URL") or None,
            half_lives=half_lives,
            blend_weights=blend,
            type_weights=TypeWeights(by_type, rating_neutral=rating_neutral, rating_max=rating_max,
                                     full_dwell_seconds=_number(env, "PULSE_FULL_DWELL_SECONDS", 30.0,
                                                                minimum=1e-9),
                                     rating_weighting=rating_weighting),
            recent_items_limit=int(_number(env, "PULSE_RECENT_ITEMS", 200, minimum=0, maximum=MAX_RECENT_ITEMS,
                                              integer=True)),
            dedup_window=int(_number(env, "PULSE_DEDUP_WINDOW", 512, minimum=1, maximum=MAX_DEDUP_WINDOW,
                                        integer=True)),
            ttl_days=_number(env, "PULSE_TTL_DAYS", 180.0, minimum=1e-9),
            encoder_threads=int(_number(env, "PULSE_ENCODER_THREADS", 1, minimum=1, integer=True)),
            write_attempts=int(_number(env, "PULSE_WRITE_ATTEMPTS", 6, minimum=1, integer=True)),
            write_concurrency=int(_number(env, "PULSE_WRITE_CONCURRENCY", 8, minimum=1, integer=True)),
            bucket=env.get("PULSE_BUCKET") or None,
            catalog_prefix=env.get("PULSE_CATALOG_PREFIX") or "catalog/",
            catalog_check_seconds=_number(env, "PULSE_CATALOG_CHECK_SECONDS", 30.0, minimum=0),
            stream_name=env.get("PULSE_STREAM") or None,
            min_strength=_number(env, "PULSE_MIN_STRENGTH", 1e-3, minimum=0),
            catalog_skip_invalid=_flag(env, "PULSE_CATALOG_SKIP_INVALID"),
            training_days=int(_number(env, "PULSE_TRAINING_DAYS", 365, minimum=1, integer=True)),
            training_max_events=int(_number(env, "PULSE_TRAINING_MAX_EVENTS", 1_000_000, minimum=1, integer=True)),
            collab_dim=int(_number(env, "PULSE_COLLAB_DIM", 128, minimum=2, integer=True)),
            text_weight=_number(env, "PULSE_TEXT_WEIGHT", 0.25, minimum=0),
            collab_weight=_number(env, "PULSE_COLLAB_WEIGHT", 0.75, minimum=0),
            popularity_weight=_number(env, "PULSE_POPULARITY_WEIGHT", 0.0, minimum=0, maximum=MAX_POPULARITY_WEIGHT),
            history_limit=int(_number(env, "PULSE_HISTORY_EVENTS", 200, minimum=1, maximum=MAX_HISTORY_EVENTS,
                                         integer=True)),
            max_clock_skew_seconds=_number(env, "PULSE_MAX_CLOCK_SKEW_SECONDS", DEFAULT_MAX_CLOCK_SKEW_SECONDS,
                                           minimum=0, maximum=MAX_CLOCK_SKEW_SECONDS),
            max_event_age_days=_number(env, "PULSE_MAX_EVENT_AGE_DAYS", 0.0, minimum=0),
            training_policy=TrainingPolicy(
                min_events=int(_number(env, "PULSE_TRAINING_MIN_EVENTS", 1000, minimum=0, integer=True)),
                min_users=int(_number(env, "PULSE_TRAINING_MIN_USERS", 50, minimum=0, integer=True)),
                min_held_out_users=int(_number(env, "PULSE_TRAINING_MIN_HELD_OUT_USERS", 20, minimum=1,
                                               integer=True)),
                tolerance=_number(env, "PULSE_TRAINING_TOLERANCE", 0.01, minimum=0)),
            access=_access_policy(env),
            pinned=frozenset(name for name, variables in PINNABLE.items()
                             if any((env.get(variable) or "").strip() for variable in variables.split())),
        )

    def require(self, name: str, variable: str) -> str:
        value: str | None = getattr(self, name)
        if not value:
            raise ConfigurationError(f"{variable} is required by this function")
        return value


def _access_policy(env: Mapping[str, str]) -> AccessPolicy:
    mode = (env.get("PULSE_API_AUTH") or AccessPolicy.mode).strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigurationError(f"PULSE_API_AUTH={mode!r} must be one of {', '.join(AUTH_MODES)}")
    claim = (env.get("PULSE_USER_ID_CLAIM") or AccessPolicy.user_id_claim).strip()
    # Unset: the template's default scope; set but empty: no scope acts on every user.
    return AccessPolicy(mode, claim, env.get("PULSE_ADMIN_SCOPE", AccessPolicy.admin_scope).strip())


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The container's settings, validated once at cold start."""
    return Settings.from_env()


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float | None = None,
            maximum: float | None = None, integer: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{name}={raw!r} is not {kind}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{name}={raw!r} is not finite")
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name}={raw!r} must be at most {maximum:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"{name}={raw!r} must be true or false")
    return raw in ("true", "1", "yes")


def _named_numbers(env: Mapping[str, str], name: str, default: Mapping[str, float], *,
                   positive: bool) -> dict[str, float]:
    """`a=1,b=2` or a JSON object {"a": 1, "b": 2}."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return dict(default)
    try:
        if raw.lstrip().startswith("{"):
            pairs = json.loads(raw)
            if not isinstance(pairs, dict):
                raise ValueError
            parsed = {str(key): float(value) for key, value in pairs.items()}
        else:
            parsed = {}
            for part in raw.split(","):
                key, _, value = part.partition("=")
                if not key.strip() or not value.strip():
                    raise ValueError
                parsed[key.strip()] = float(value)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{name}={raw!r} is not a list of name=number (e.g. short=1800,long=2592000)"
                                 ) from None
    if not parsed:
        raise ConfigurationError(f"{name} is empty")
    for key, number in parsed.items():
        if number != number or number in (float("inf"), float("-inf")) or (positive and number <= 0):
            raise ConfigurationError(f"{name}: {key}={number} must be a {'positive ' if positive else ''}"
                                     "finite number")
    return parsed
