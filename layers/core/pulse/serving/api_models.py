"""The HTTP API's request and response shapes (README, "The HTTP API"): what pulse.serving.service returns, and
what the OpenAPI document describes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator
from pydantic_core import PydanticCustomError

from pulse.events.behaviour import BehaviourEvent
from pulse.serving.recommend import ScoredItem, Strategy

MAX_EVENTS_PER_REQUEST = 500


class RecommendationsResponse(BaseModel):
    user_id: str
    strategy: Strategy
    catalog_version: str
    items: list[ScoredItem]


class SimilarResponse(BaseModel):
    item_id: str
    catalog_version: str
    items: list[ScoredItem]


class ClosestItem(BaseModel):
    item_id: str
    title: str | None
    score: float


class ScaleProfile(BaseModel):
    half_life_seconds: float
    strength: float
    decayed_from: float | None
    closest_items: list[ClosestItem]
    top_categories: list[str]


class ProfileResponse(BaseModel):
    user_id: str
    event_count: int
    first_event_ts: float | None
    last_event_ts: float | None
    as_of: float
    strength: float
    recent_items: list[str]
    scales: dict[str, ScaleProfile]
    catalog_version: str | None


def _an_object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
    return raw


# An event of a request: any JSON object, validated against BehaviourEvent one by one when published (a batch is
# never refused for one bad event); the document shows the event's schema.
EventPayload = Annotated[dict[str, Any], PlainValidator(_an_object,
                                                        json_schema_input_type=BehaviourEvent | dict[str, Any])]


class EventsRequest(BaseModel):
    events: list[EventPayload] = Field(
        min_length=1, max_length=MAX_EVENTS_PER_REQUEST,
        description="behaviour events (BehaviourEvent, contract 1), each validated on its own: the valid ones are "
                    "put to the stream, the others are listed in `rejected` with their error (an object that does "
                    "not match BehaviourEvent does not refuse the request)")


class Rejection(BaseModel):
    index: int
    error: str


class EventsResponse(BaseModel):
    accepted: int
    rejected: list[Rejection]


class SpaceDescription(BaseModel):
    kind: Literal["text", "hybrid"] = Field(description="text: the encoder's space; hybrid: text + learned blocks")
    dim: int
    basis: str | None = Field(description="the space's identity: uploads keep it, only a training changes it")
    settings: dict[str, Any] = Field(description="the interest settings serving now (learned unless pinned)")


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    catalog_version: str | None
    item_count: int
    encoder_fingerprint: str | None
    space: SpaceDescription | None = None
    refused: dict[str, str] | None = Field(default=None, description="the last catalogue version refused, and why")
    deferred: dict[str, str | float] | None = Field(
        default=None, description="a catalogue version whose loading failed on a storage error, and when it is "
                                  "tried again (retry_in_seconds)")


class ForgetResponse(BaseModel):
    user_id: str
    forgotten: bool


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None
