"""Settings, read from the environment and validated once per container (at the handler's cold start).

`Settings` holds what every function reads; each function's class adds what only it reads (`IngestSettings`,
`ApiSettings`, `CatalogSettings`, `TrainSettings`). Every field names its environment variable and holds its
default, once: code that needs a default reads it from the field (`TrainSettings.default("text_weight")`), and
tests/unit/test_settings.py checks template.yaml's parameter defaults against the fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from pulse.authorization import AUTH_MODES, AccessPolicy
from pulse.container import on_reset
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
    MIN_STRENGTH,
    RATING_WEIGHTINGS,
    WRITE_ATTEMPTS,
    InterestSettings,
    TypeWeights,
)

DEFAULT_HALF_LIVES = {"short": 1800.0, "long": 30 * 86400.0}
DEFAULT_BLEND = {"short": 0.5, "long": 0.5}  # a scale of another name weighs 1
MAX_CLOCK_SKEW_SECONDS = 86400.0  # the template's MaxValue: a day ahead is already a broken clock

# Settings a training learns unless the deployment sets them (template parameter -> environment variable).
PINNABLE = {"half_lives": "PULSE_HALF_LIVES", "blend_weights": "PULSE_BLEND_WEIGHTS",
            "rating_weighting": "PULSE_RATING_WEIGHTING", "blocks": "PULSE_TEXT_WEIGHT PULSE_COLLAB_WEIGHT",
            "popularity_weight": "PULSE_POPULARITY_WEIGHT"}
# Set but empty is a value of its own here (no admin scope); any other empty variable is as good as unset.
EMPTY_IS_A_VALUE = frozenset({"PULSE_ADMIN_SCOPE"})
# Unset or empty: the default; but spaces alone are a mistake for these (an access mode never falls back to open).
BLANK_IS_AN_ERROR = frozenset({"PULSE_API_AUTH", "PULSE_USER_ID_CLAIM", "PULSE_CATALOG_SKIP_INVALID"})


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


# The defaults of the objects the settings build, as those objects define them.
_INTEREST = InterestSettings(half_lives=DEFAULT_HALF_LIVES)
_WEIGHTS = TypeWeights(DEFAULT_TYPE_WEIGHTS)
_ACCESS = AccessPolicy()
_POLICY = TrainingPolicy()


def default_blend(scales: Iterable[str]) -> dict[str, float]:
    return {name: DEFAULT_BLEND.get(name, 1.0) for name in scales}


class Settings(BaseModel):
    """What every function reads: the interest model, the table, the catalogue, the event time limits."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_by_name=True,
                              validate_by_alias=True)

    table_name: str = Field(default="pulse-interest", validation_alias="PULSE_TABLE")
    bucket: str | None = Field(default=None, validation_alias="PULSE_BUCKET")
    catalog_prefix: str = Field(default="catalog/", validation_alias="PULSE_CATALOG_PREFIX")
    catalog_check_seconds: float = Field(default=30.0, validation_alias="PULSE_CATALOG_CHECK_SECONDS", ge=0)
    half_lives: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_HALF_LIVES),
                                         validation_alias="PULSE_HALF_LIVES")
    # Unset: one weight per scale of PULSE_HALF_LIVES (DEFAULT_BLEND's, else 1).
    blend_weights: dict[str, float] = Field(
        default_factory=lambda data: default_blend(data.get("half_lives", DEFAULT_HALF_LIVES)),
        validation_alias="PULSE_BLEND_WEIGHTS")
    # PULSE_TYPE_WEIGHTS names only the types it changes: the others keep their default weight.
    weights_by_type: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS),
                                              validation_alias="PULSE_TYPE_WEIGHTS")
    rating_neutral: float = Field(default=_WEIGHTS.rating_neutral, validation_alias="PULSE_RATING_NEUTRAL")
    rating_max: float = Field(default=_WEIGHTS.rating_max, validation_alias="PULSE_RATING_MAX")
    full_dwell_seconds: float = Field(default=_WEIGHTS.full_dwell_seconds, validation_alias="PULSE_FULL_DWELL_SECONDS",
                                      gt=0)
    rating_weighting: str = Field(default=_WEIGHTS.rating_weighting, validation_alias="PULSE_RATING_WEIGHTING")
    recent_items_limit: int = Field(default=_INTEREST.recent_items_limit, validation_alias="PULSE_RECENT_ITEMS", ge=0,
                                    le=MAX_RECENT_ITEMS)
    dedup_window: int = Field(default=_INTEREST.dedup_window, validation_alias="PULSE_DEDUP_WINDOW", ge=1,
                              le=MAX_DEDUP_WINDOW)
    history_limit: int = Field(default=_INTEREST.history_limit, validation_alias="PULSE_HISTORY_EVENTS", ge=1,
                               le=MAX_HISTORY_EVENTS)
    ttl_days: float = Field(default=180.0, validation_alias="PULSE_TTL_DAYS", gt=0)
    # The interest store's optimistic writes: the ingest's, and the API's forget.
    write_attempts: int = Field(default=WRITE_ATTEMPTS, validation_alias="PULSE_WRITE_ATTEMPTS", ge=1)
    min_strength: float = Field(default=MIN_STRENGTH, validation_alias="PULSE_MIN_STRENGTH", ge=0)
    # The cosine's companion: weight x the serving version's trending prior (0 until a training learns one).
    popularity_weight: float = Field(default=0.0, validation_alias="PULSE_POPULARITY_WEIGHT", ge=0,
                                     le=MAX_POPULARITY_WEIGHT)
    max_clock_skew_seconds: float = Field(default=DEFAULT_MAX_CLOCK_SKEW_SECONDS,
                                          validation_alias="PULSE_MAX_CLOCK_SKEW_SECONDS", ge=0,
                                          le=MAX_CLOCK_SKEW_SECONDS)
    max_event_age_days: float = Field(default=0.0, validation_alias="PULSE_MAX_EVENT_AGE_DAYS", ge=0)  # 0: no limit
    # What the deployment set itself (PINNABLE): these win over what a training learned; the others follow the
    # serving catalogue version. from_env fills it from which variables are set.
    pinned: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """These settings from environment variables (default: the process's); a ConfigurationError names the
        variable and the problem."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name, field in cls.model_fields.items():
            variable = variable_of(field) or ""
            raw = env.get(variable)
            if raw is None or not (raw.strip() or variable in EMPTY_IS_A_VALUE
                                   or (raw and variable in BLANK_IS_AN_ERROR)):
                continue
            if field.annotation is int and not _whole_number(raw):
                problems.append(f"{variable}={raw!r} is not a whole number")
                continue
            values[name] = raw
        values["pinned"] = frozenset(name for name, variables in PINNABLE.items()
                                     if any((env.get(variable) or "").strip() for variable in variables.split()))
        try:
            config = cls.model_validate(values)
        except ValidationError as error:
            problems.append(str(configuration_error(cls, error)))
        if problems:
            raise ConfigurationError("; ".join(problems))
        return config

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default, for code that needs it without an environment."""
        return cls.model_fields[name].get_default(call_default_factory=True, validated_data={})

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable a field is read from."""
        return variable_of(cls.model_fields[name]) or name

    @field_validator("half_lives", "blend_weights", "weights_by_type", mode="before")
    @classmethod
    def _named_numbers(cls, raw: Any, info: ValidationInfo) -> Any:
        if not isinstance(raw, str):
            return raw
        assert info.field_name is not None
        return named_numbers(cls.variable(info.field_name), raw, positive=info.field_name == "half_lives")

    @field_validator("half_lives")
    @classmethod
    def _few_short_scales(cls, half_lives: dict[str, float]) -> dict[str, float]:
        if len(half_lives) > MAX_TIME_SCALES or any(len(name.encode()) > MAX_SCALE_NAME_BYTES for name in half_lives):
            raise ConfigurationError(f"PULSE_HALF_LIVES may name at most {MAX_TIME_SCALES} time scales of at most "
                                     f"{MAX_SCALE_NAME_BYTES} bytes each (they size every user's item)")
        return half_lives

    @field_validator("weights_by_type")
    @classmethod
    def _known_types(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(EVENT_TYPES))
        if unknown:
            raise ConfigurationError(f"PULSE_TYPE_WEIGHTS names unknown event types {unknown}; "
                                     f"known: {', '.join(EVENT_TYPES)}")
        return {**DEFAULT_TYPE_WEIGHTS, **weights}

    @field_validator("rating_weighting", mode="before")
    @classmethod
    def _rating_weighting(cls, raw: Any) -> Any:
        return one_of(cls.variable("rating_weighting"), raw, RATING_WEIGHTINGS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        unknown = sorted(set(self.blend_weights) - set(self.half_lives))
        if unknown:
            raise ConfigurationError(f"PULSE_BLEND_WEIGHTS names scales {unknown} that PULSE_HALF_LIVES "
                                     f"does not define ({sorted(self.half_lives)})")
        if self.rating_max <= self.rating_neutral:
            raise ConfigurationError("PULSE_RATING_MAX must be greater than PULSE_RATING_NEUTRAL")
        return self

    @property
    def type_weights(self) -> TypeWeights:
        return TypeWeights(self.weights_by_type, rating_neutral=self.rating_neutral, rating_max=self.rating_max,
                           full_dwell_seconds=self.full_dwell_seconds, rating_weighting=self.rating_weighting)

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

    def serving(self, learned: Mapping[str, Any] | None) -> Self:
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
            changes["blend_weights"] = default_blend(scales)
        if "rating_weighting" not in self.pinned and learned.get("rating_weighting") in RATING_WEIGHTINGS:
            changes["rating_weighting"] = learned["rating_weighting"]
        if "popularity_weight" not in self.pinned and "popularity_weight" in learned:
            changes["popularity_weight"] = float(learned["popularity_weight"])
        return self.model_copy(update=changes) if changes else self

    def require(self, name: str) -> str:
        value: str | None = getattr(self, name)
        if not value:
            raise ConfigurationError(f"{self.variable(name)} is required by this function")
        return value


class EncoderSettings(Settings):
    """A function that embeds text (the ingest's events, the catalogue's items)."""

    encoder_threads: int = Field(default=1, validation_alias="PULSE_ENCODER_THREADS", ge=1)


class IngestSettings(EncoderSettings):
    dead_letter_queue_url: str | None = Field(default=None, validation_alias="PULSE_DLQ_URL")
    write_concurrency: int = Field(default=8, validation_alias="PULSE_WRITE_CONCURRENCY", ge=1)


class CatalogSettings(EncoderSettings):
    catalog_skip_invalid: bool = Field(default=False, validation_alias="PULSE_CATALOG_SKIP_INVALID")

    @field_validator("catalog_skip_invalid", mode="before")
    @classmethod
    def _flag(cls, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        if raw.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigurationError(f"{cls.variable('catalog_skip_invalid')}={raw.strip().lower()!r} "
                                     "must be true or false")
        return raw.strip().lower() in ("true", "1", "yes")


class ApiSettings(Settings):
    stream_name: str | None = Field(default=None, validation_alias="PULSE_STREAM")
    api_auth: str = Field(default=_ACCESS.mode, validation_alias="PULSE_API_AUTH")
    user_id_claim: str = Field(default=_ACCESS.user_id_claim, validation_alias="PULSE_USER_ID_CLAIM")
    # Unset: the template's default scope; set but empty: no scope acts on every user.
    admin_scope: str = Field(default=_ACCESS.admin_scope, validation_alias="PULSE_ADMIN_SCOPE")

    @field_validator("api_auth", mode="before")
    @classmethod
    def _api_auth(cls, raw: Any) -> Any:
        return one_of(cls.variable("api_auth"), raw, AUTH_MODES)

    @field_validator("user_id_claim", "admin_scope", mode="before")
    @classmethod
    def _stripped(cls, raw: Any) -> Any:
        return raw.strip() if isinstance(raw, str) else raw

    @field_validator("user_id_claim")
    @classmethod
    def _a_claim(cls, claim: str) -> str:
        if not claim:
            raise ConfigurationError(f"{cls.variable('user_id_claim')} is blank: name the token claim that holds "
                                     "the user id (e.g. sub)")
        return claim

    @cached_property
    def access(self) -> AccessPolicy:
        """Built once per settings object (once per container), not per request."""
        return AccessPolicy(self.api_auth, self.user_id_claim, self.admin_scope)


class TrainSettings(Settings):
    training_days: int = Field(default=365, validation_alias="PULSE_TRAINING_DAYS", ge=1)
    training_max_events: int = Field(default=1_000_000, validation_alias="PULSE_TRAINING_MAX_EVENTS", ge=1)
    # The space's defaults, chosen on MovieLens-100K validation events (pulse_dev.offline_eval): 128 collaborative
    # dimensions, the text block a quarter of the hybrid vector.
    collab_dim: int = Field(default=128, validation_alias="PULSE_COLLAB_DIM", ge=2)
    text_weight: float = Field(default=0.25, validation_alias="PULSE_TEXT_WEIGHT", ge=0)
    collab_weight: float = Field(default=0.75, validation_alias="PULSE_COLLAB_WEIGHT", ge=0)
    training_min_events: int = Field(default=_POLICY.min_events, validation_alias="PULSE_TRAINING_MIN_EVENTS", ge=0)
    training_min_users: int = Field(default=_POLICY.min_users, validation_alias="PULSE_TRAINING_MIN_USERS", ge=0)
    training_min_held_out_users: int = Field(default=_POLICY.min_held_out_users,
                                             validation_alias="PULSE_TRAINING_MIN_HELD_OUT_USERS", ge=1)
    training_tolerance: float = Field(default=_POLICY.tolerance, validation_alias="PULSE_TRAINING_TOLERANCE", ge=0)

    @property
    def training_policy(self) -> TrainingPolicy:
        return TrainingPolicy(min_events=self.training_min_events, min_users=self.training_min_users,
                              min_held_out_users=self.training_min_held_out_users, tolerance=self.training_tolerance)


_loaded: list[Settings] = []


def load_settings[S: Settings](kind: type[S]) -> S:
    """The container's settings of this kind, read from the environment once: the handlers read theirs at cold
    start, so a bad value fails the start, naming its variable. Code that needs only what a base class holds
    gets the function's own object."""
    for loaded in _loaded:
        if isinstance(loaded, kind):
            return loaded
    config = kind.from_env()
    _loaded.append(config)
    return config


@on_reset
def clear_settings() -> None:
    """Forget the settings read: the next call reads the environment again, as a new container would."""
    _loaded.clear()


def _whole_number(raw: str) -> bool:
    """As int() reads it ("12", " 12 ", "1_000"), not "12.0": a count is written as one."""
    try:
        int(raw)
    except ValueError:
        return False
    return True


def variable_of(field: FieldInfo) -> str | None:
    return field.validation_alias if isinstance(field.validation_alias, str) else None


PROBLEMS = {"int_parsing": "is not a whole number", "int_from_float": "is not a whole number",
            "int_type": "is not a whole number", "float_parsing": "is not a number", "float_type": "is not a number",
            "finite_number": "is not finite", "greater_than_equal": "must be at least {ge:g}",
            "greater_than": "must be greater than {gt:g}", "less_than_equal": "must be at most {le:g}"}


def configuration_error(kind: type[Settings], error: ValidationError) -> ConfigurationError:
    """pydantic's errors as one message, each naming its environment variable and the problem."""
    messages = []
    for problem in error.errors(include_url=False):
        cause = (problem.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigurationError):  # a message of this module's validators: complete already
            messages.append(str(cause))
            continue
        if problem["type"] == "default_factory_not_called":  # a consequence of another field's error
            continue
        location = problem["loc"]
        name = str(location[0]) if location else ""
        variable = kind.variable(name) if name in kind.model_fields else name
        template = PROBLEMS.get(problem["type"])
        text = template.format(**problem.get("ctx", {})) if template else problem["msg"]
        messages.append(f"{variable}={problem['input']!r} {text}")
    return ConfigurationError("; ".join(messages))


def one_of(variable: str, raw: Any, choices: tuple[str, ...]) -> Any:
    if not isinstance(raw, str):
        return raw
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigurationError(f"{variable}={value!r} must be one of {', '.join(choices)}")
    return value


def named_numbers(variable: str, raw: str, *, positive: bool) -> dict[str, float]:
    """`a=1,b=2` or a JSON object {"a": 1, "b": 2}."""
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
        raise ConfigurationError(f"{variable}={raw!r} is not a list of name=number (e.g. short=1800,long=2592000)"
                                 ) from None
    if not parsed:
        raise ConfigurationError(f"{variable} is empty")
    for key, number in parsed.items():
        if number != number or number in (float("inf"), float("-inf")) or (positive and number <= 0):
            raise ConfigurationError(f"{variable}: {key}={number} must be a {'positive ' if positive else ''}"
                                     "finite number")
    return parsed
