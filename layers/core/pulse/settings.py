"""One validated configuration object, read from the environment once per container."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from pulse.events import EVENT_TYPES
from pulse.interest import DEFAULT_TYPE_WEIGHTS, RATING_WEIGHTINGS, InterestSettings, TypeWeights

DEFAULT_HALF_LIVES = {"short": 1800.0, "long": 30 * 86400.0}
DEFAULT_BLEND = {"short": 0.5, "long": 0.5}


class ConfigurationError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    table_name: str = "pulse-interest"
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
    training_days: int = 30
    collab_dim: int = 128
    text_weight: float = 0.25
    collab_weight: float = 0.75

    @property
    def interest(self) -> InterestSettings:
        return InterestSettings(half_lives=self.half_lives, recent_items_limit=self.recent_items_limit,
                                dedup_window=self.dedup_window)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        half_lives = _named_numbers(env, "PULSE_HALF_LIVES", DEFAULT_HALF_LIVES, positive=True)
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
        rating_weighting = (env.get("PULSE_RATING_WEIGHTING") or "stars").strip().lower()
        if rating_weighting not in RATING_WEIGHTINGS:
            raise ConfigurationError(f"PULSE_RATING_WEIGHTING={rating_weighting!r} must be one of "
                                     f"{', '.join(RATING_WEIGHTINGS)}")
        return cls(
            table_name=env.get("PULSE_TABLE", cls.table_name),
            dead_letter_queue_url=env.get("PULSE_DLQ_URL") or None,
            half_lives=half_lives,
            blend_weights=blend,
            type_weights=TypeWeights(by_type, rating_neutral=rating_neutral, rating_max=rating_max,
                                     full_dwell_seconds=_number(env, "PULSE_FULL_DWELL_SECONDS", 30.0,
                                                                minimum=1e-9),
                                     rating_weighting=rating_weighting),
            recent_items_limit=int(_number(env, "PULSE_RECENT_ITEMS", 200, minimum=0, integer=True)),
            dedup_window=int(_number(env, "PULSE_DEDUP_WINDOW", 512, minimum=1, integer=True)),
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
            training_days=int(_number(env, "PULSE_TRAINING_DAYS", 30, minimum=1, integer=True)),
            collab_dim=int(_number(env, "PULSE_COLLAB_DIM", 128, minimum=2, integer=True)),
            text_weight=_number(env, "PULSE_TEXT_WEIGHT", 0.25, minimum=0),
            collab_weight=_number(env, "PULSE_COLLAB_WEIGHT", 0.75, minimum=0),
        )

    def require(self, name: str, variable: str) -> str:
        value = getattr(self, name)
        if not value:
            raise ConfigurationError(f"{variable} is required by this function")
        return value


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The container's settings, validated once at cold start."""
    return Settings.from_env()


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float | None = None,
            integer: bool = False) -> float:
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
    for key, value in parsed.items():
        if value != value or value in (float("inf"), float("-inf")) or (positive and value <= 0):
            raise ConfigurationError(f"{name}: {key}={value} must be a {'positive ' if positive else ''}"
                                     "finite number")
    return parsed
