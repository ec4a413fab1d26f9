"""The HTTP API's request and response shapes (README, "The HTTP API"); the OpenAPI document comes from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from pulse.serving.service import MAX_EVENTS_PER_REQUEST


class ScoredItemModel(BaseModel):
    item_id: str
    score: float
    reason: str


class RecommendationsResponse(BaseModel):
    user_id: str
    strategy: Literal["personal", "popular"]
    catalog_version: str
    items: list[ScoredItemModel]


class SimilarResponse(BaseModel):
    item_id: str
    catalog_version: str
    items: list[ScoredItemModel]


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


class EventsRequest(BaseModel):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST,
                                         description="behaviour events (contract 1)")


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
