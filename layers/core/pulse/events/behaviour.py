"""The behaviour-event contract (README, "The behaviour event"): the pydantic model BehaviourEvent, whose JSON schema
/openapi.json documents under POST /events, validated with the checks JSON Schema cannot say (NFC identifiers within
a byte limit, ISO-8601-or-epoch times, the clock's limits, item_id and/or text, value for `rate`) and clear errors
that name the field."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from pulse.errors import PulseError

EventType = Literal["view", "click", "add_to_cart", "purchase", "like", "dislike", "skip", "rate", "search"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
TYPES_NEEDING_VALUE: frozenset[EventType] = frozenset({"rate"})
TYPES_NEEDING_TEXT: frozenset[EventType] = frozenset({"search"})

MAX_ID_BYTES = 128  # UTF-8 bytes, after NFC normalisation
MAX_TEXT_LENGTH = 2000
MAX_RECORD_BYTES = 64 * 1024
# Epoch seconds beyond this are almost surely milliseconds (year 5138).
MAX_EPOCH_SECONDS = 1e11
DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300.0


class InvalidEventError(PulseError, ValueError):
    """A record that can never be applied; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """How far an event's ts may be from `now` (the receiving function's clock): at most `max_skew_seconds` in
    the future and, when `max_age_seconds` is set, at most that old."""

    now: float
    max_skew_seconds: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS
    max_age_seconds: float | None = None

    def check(self, seconds: float, raw: Any) -> None:
        ahead = seconds - self.now
        if ahead > self.max_skew_seconds:
            raise InvalidEventError(f"ts {_clip(str(raw))} is {ahead:.0f} s in the future; the limit is "
                               f"{self.max_skew_seconds:g} s (PULSE_MAX_CLOCK_SKEW_SECONDS)")
        if self.max_age_seconds is not None and -ahead > self.max_age_seconds:
            raise InvalidEventError(f"ts {_clip(str(raw))} is {-ahead / 86400:.1f} days old; the limit is "
                               f"{self.max_age_seconds / 86400:g} days (PULSE_MAX_EVENT_AGE_DAYS)")


def decode_record_data(data: bytes) -> object:
    """Kinesis record bytes (already base64-decoded) -> the JSON value (standard JSON: no NaN or Infinity); any
    value, not only an object: parse_event says when it is not one."""
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidEventError(f"record is {len(data)} bytes; the limit is {MAX_RECORD_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidEventError(f"record data is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        payload = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise InvalidEventError(f"record data is not valid JSON: {error.msg} at line {error.lineno} "
                           f"column {error.colno}") from None
    except RecursionError:
        raise InvalidEventError("record data is not valid JSON: nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise InvalidEventError(f"record data is not valid JSON: {error}") from None
    return payload


def encode_event(payload: dict[str, Any], event: BehaviourEvent) -> bytes:
    """The record to put on the stream for a parsed payload: one line of compact, standard JSON, with the ids
    as normalised (other fields kept as sent); raises InvalidEventError if it is not JSON or too big."""
    ids = {name: getattr(event, name) for name in ("event_id", "user_id", "item_id") if name in payload}
    record = {**payload, **ids}
    try:
        try:
            data = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a field the contract ignores: JSON escapes it
            data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii")
    except ValueError as error:
        raise InvalidEventError(f"the event is not standard JSON ({error}); NaN and Infinity are not JSON numbers"
                           ) from None
    except (TypeError, RecursionError) as error:
        raise InvalidEventError(f"the event cannot be written as JSON ({type(error).__name__})") from None
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidEventError(f"the event is {len(data)} bytes as JSON; the stream's limit is {MAX_RECORD_BYTES} "
                           "bytes per record")
    return data


def parse_event(payload: Any, limits: TimeLimits | None = None) -> BehaviourEvent:
    """Validate one behaviour event against the contract; raises InvalidEventError naming the field (the first
    problem, in the order event_id, user_id, type, item_id, text, value, ts, then the rules between fields). With
    `limits`, an event dated too far in the future (or too long ago) is invalid too."""
    if not isinstance(payload, dict):
        raise InvalidEventError(f"an event must be a JSON object, got {_json_type(payload)}")
    try:
        return BehaviourEvent.model_validate(payload, context=None if limits is None else {"limits": limits})
    except ValidationError as error:
        raise _first_problem(error) from None


def _first_problem(error: ValidationError) -> InvalidEventError:
    """The InvalidEventError a field's check raised, or for a required field that is absent the one its check
    raises for null (absent and null are the same to the contract)."""
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "missing":
        name = str(first["loc"][0])
        try:
            _REQUIRED[name](None)
        except InvalidEventError as problem:
            return problem
    cause = first["ctx"]["error"]  # every field's check raises an InvalidEventError
    if not isinstance(cause, InvalidEventError):
        raise error  # not a problem of the event: a bug here, shown as it is
    return cause


def parse_timestamp(raw: Any) -> float:
    """Epoch seconds (number) or an ISO-8601 string with a time zone -> epoch seconds."""
    if raw is None:
        raise InvalidEventError("ts is required (epoch seconds or ISO-8601 with time zone)")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvalidEventError(f"ts must be epoch seconds or an ISO-8601 string, got {_json_type(raw)}")
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidEventError(f"ts '{_clip(raw)}' is not an ISO-8601 date-time") from None
        if moment.tzinfo is None:
            raise InvalidEventError(f"ts '{_clip(raw)}' has no time zone (add Z or an offset like +02:00)")
        seconds = moment.timestamp()
    else:
        seconds = _float(raw, "ts")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidEventError(f"ts must be a finite, non-negative epoch time, got {_clip(str(raw))}")
    if seconds > MAX_EPOCH_SECONDS:
        raise InvalidEventError(f"ts {_clip(str(raw))} is too large for epoch seconds (milliseconds? divide by 1000)")
    return seconds


def identifier(payload: dict[str, Any], field: str) -> str:
    """A required id of another document (a catalogue line's item_id), checked and normalised like an event's."""
    return _required_id(payload.get(field), field)


def _required_id(raw: Any, field: str) -> str:
    if raw is None:
        raise InvalidEventError(f"{field} is required")
    return _string_id(raw, field)


def _optional_id(raw: Any, field: str) -> str | None:
    return None if raw is None else _string_id(raw, field)


def _string_id(raw: Any, field: str) -> str:
    if not isinstance(raw, str):
        raise InvalidEventError(f"{field} must be a string, got {_json_type(raw)}")
    return normalise_identifier(raw, field)


def normalise_identifier(raw: str, field: str) -> str:
    """An id in NFC (so 'é' and 'e' + combining accent are one id), at most MAX_ID_BYTES in UTF-8, without
    control, format (e.g. bidi overrides, zero-width) or unassigned characters and surrounding spaces.
    Reasons never repeat the id (it may be personal)."""
    for position, char in enumerate(raw):
        category = unicodedata.category(char)
        if category[0] == "C":
            kind = _CATEGORY_NAMES.get(category, "control")
            name = unicodedata.name(char, "")
            raise InvalidEventError(f"{field} holds a {kind} character U+{ord(char):04X}{f' ({name})' if name else ''} "
                               f"at position {position}")
    if raw != raw.strip():
        raise InvalidEventError(f"{field} has leading or trailing spaces")
    value = unicodedata.normalize("NFC", raw)
    size = len(value.encode("utf-8"))
    if not 1 <= size <= MAX_ID_BYTES:
        raise InvalidEventError(f"{field} must be 1-{MAX_ID_BYTES} bytes in UTF-8, got {size}")
    return value


_CATEGORY_NAMES = {"Cc": "control", "Cf": "format (invisible or bidi control)", "Cs": "lone surrogate",
                   "Co": "private-use", "Cn": "unassigned"}


def _event_type(raw: Any) -> EventType:
    if raw is None:
        raise InvalidEventError("type is required")
    if not isinstance(raw, str) or raw not in EVENT_TYPES:
        shown = f"'{_clip(raw)}'" if isinstance(raw, str) else _json_type(raw)
        raise InvalidEventError(f"unknown type {shown}; expected one of {', '.join(EVENT_TYPES)}")
    return cast(EventType, raw)


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidEventError(f"text must be a string, got {_json_type(raw)}")
    if not raw.strip():
        raise InvalidEventError("text is empty")
    if not _encodable(raw):
        raise InvalidEventError("text is not valid Unicode (it holds a lone surrogate)")
    if len(raw) > MAX_TEXT_LENGTH:
        raise InvalidEventError(f"text is {len(raw)} characters; the limit is {MAX_TEXT_LENGTH}")
    return raw


def _value(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidEventError(f"value must be a number, got {_json_type(raw)}")
    value = _float(raw, "value")
    if not math.isfinite(value):
        raise InvalidEventError("value must be a finite number")
    return value


def _float(raw: int | float, field: str) -> float:
    try:
        return float(raw)
    except OverflowError:
        raise InvalidEventError(f"{field} is too large a number") from None


def _no_constant(name: str) -> float:
    raise InvalidEventError(f"record data is not standard JSON: {name} is not a JSON number")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(raw: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(raw), type(raw).__name__)


def _clip(text: str, limit: int = 60) -> str:
    """The start of a raw value for a message, printable as UTF-8 whatever it holds (a lone surrogate, which JSON
    can carry as "\\ud800", is shown escaped: pydantic, SQS and the logs need valid text)."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def _timestamp(raw: Any, info: ValidationInfo) -> float:
    seconds = parse_timestamp(raw)
    limits: TimeLimits | None = info.context.get("limits") if info.context else None
    if limits is not None:
        limits.check(seconds, raw)
    return seconds


# Each required field's check, called with null when the field is absent: its message says it is required.
_REQUIRED: dict[str, Callable[[Any], object]] = {
    "event_id": lambda raw: _required_id(raw, "event_id"), "user_id": lambda raw: _required_id(raw, "user_id"),
    "type": _event_type, "ts": parse_timestamp}

_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES,
              "description": f"1-{MAX_ID_BYTES} bytes in UTF-8 after NFC normalisation (the id as stored); no "
                             "control, format (invisible, bidi), private-use or unassigned characters, no leading "
                             "or trailing spaces"}


def _event_schema(schema: dict[str, Any]) -> None:
    """The rules between fields, in JSON Schema (OpenAPI 3.1): item_id and/or text; text for search, value for
    rate."""
    schema["description"] = " ".join(schema["description"].split())  # the model's docstring, on one line
    schema["anyOf"] = [{"required": ["item_id"]}, {"required": ["text"]}]
    schema["allOf"] = [{"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                        "then": {"required": [needed]}}
                       for kinds, needed in ((TYPES_NEEDING_TEXT, "text"), (TYPES_NEEDING_VALUE, "value"))
                       for kind in sorted(kinds)]


class BehaviourEvent(BaseModel):
    """One behaviour event (contract 1; README, "The behaviour event"). Fields not listed are allowed and kept on
    the stream as sent; null is the same as absent."""

    model_config = ConfigDict(frozen=True, json_schema_extra=_event_schema)

    event_id: Annotated[str, PlainValidator(_REQUIRED["event_id"]), WithJsonSchema(_ID_SCHEMA)]
    user_id: Annotated[str, PlainValidator(_REQUIRED["user_id"]), WithJsonSchema(_ID_SCHEMA)]
    type: Annotated[EventType, PlainValidator(_event_type), WithJsonSchema(
        {"type": "string", "enum": list(EVENT_TYPES)})]
    item_id: Annotated[str | None, PlainValidator(lambda raw: _optional_id(raw, "item_id")), WithJsonSchema(
        {**_ID_SCHEMA, "description": "the catalogue item; " + _ID_SCHEMA["description"]})] = None
    text: Annotated[str | None, PlainValidator(_text), WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH,
         "description": "free text to embed (the query of a search; an item's text when the catalogue does not "
                        "have it); not only spaces"})] = None
    value: Annotated[float | None, PlainValidator(_value), WithJsonSchema(
        {"type": "number", "description": "finite: the rating for rate (required), dwell seconds for view"})] = None
    ts: Annotated[float, PlainValidator(_timestamp), WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_EPOCH_SECONDS},
                   {"type": "string", "format": "date-time"}],
         "description": "epoch seconds, or ISO-8601 with a time zone (Z or an offset); at most "
                        f"{DEFAULT_MAX_CLOCK_SKEW_SECONDS:g} s ahead of the receiver's clock by default "
                        "(PULSE_MAX_CLOCK_SKEW_SECONDS), at most PULSE_MAX_EVENT_AGE_DAYS old when set"})]

    @model_validator(mode="after")
    def _between_fields(self) -> BehaviourEvent:
        if self.item_id is None and self.text is None:
            raise InvalidEventError("an event needs item_id or text (neither was given)")
        if self.type in TYPES_NEEDING_TEXT and self.text is None:
            raise InvalidEventError(f"type '{self.type}' needs text (the query)")
        if self.type in TYPES_NEEDING_VALUE and self.value is None:
            raise InvalidEventError(f"type '{self.type}' needs a numeric value (the rating)")
        return self
