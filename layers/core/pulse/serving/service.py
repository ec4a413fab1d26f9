"""What the HTTP API does, independent of API Gateway: recommendations, similar items, profiles, events."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pulse import aws
from pulse.catalog.store import LiveCatalog
from pulse.catalog.version import CatalogVersion
from pulse.errors import PulseError
from pulse.events.behaviour import InvalidEventError, encode_event, normalise_identifier, parse_event
from pulse.interest.model import UserInterest, blend, decay_to
from pulse.interest.store import InterestStore
from pulse.serving import api_models
from pulse.serving.recommend import best_rows, recommend, scale_vectors, similar_items
from pulse.settings import Settings


class NotFoundError(PulseError, LookupError):
    """The thing asked about does not exist (answered with 404)."""


def path_identifier(raw: str, name: str) -> str:
    """An id from the request path, normalised like the events' ids (NFC, bytes). One the event contract refuses
    (format, unassigned or private-use characters, over the byte limit) names nothing that can exist: 404, with
    the reason (the OpenAPI pattern cannot express Unicode categories, so this is not a 400)."""
    try:
        return normalise_identifier(raw, name)
    except InvalidEventError as error:
        raise NotFoundError(f"no {name.removesuffix('_id')} can have this id: {error}") from None


@dataclass
class RecommendationService:
    store: InterestStore
    catalog: LiveCatalog
    settings: Settings
    encoder_fingerprint: str | None = None
    clock: Callable[[], float] = time.time

    def recommendations(self, user_id: str, *, k: int, exclude_seen: bool, category: str | None,
                        at: float | None) -> api_models.RecommendationsResponse:
        user_id = path_identifier(user_id, "user_id")
        catalog = self.catalog.current()
        user = self._user(user_id)
        config = self.settings.serving(catalog.learned_settings())
        result = recommend(catalog, user, k=k, at=self.clock() if at is None else at,
                           half_lives=config.half_lives, blend_weights=config.blend_weights,
                           exclude_seen=exclude_seen, category=category, min_strength=config.min_strength,
                           type_weights=config.type_weights, popularity_weight=config.popularity_weight)
        return api_models.RecommendationsResponse(user_id=user_id, strategy=result.strategy,
                                                  catalog_version=catalog.version, items=result.items)

    def similar(self, item_id: str, *, k: int) -> api_models.SimilarResponse:
        item_id = path_identifier(item_id, "item_id")
        catalog = self.catalog.current()
        if item_id not in catalog.index:
            raise NotFoundError(f"item '{item_id}' is not in catalogue {catalog.version}")
        return api_models.SimilarResponse(item_id=item_id, catalog_version=catalog.version,
                                          items=similar_items(catalog, item_id, k))

    def profile(self, user_id: str, *, at: float | None = None) -> api_models.ProfileResponse:
        user_id = path_identifier(user_id, "user_id")
        user = self._user(user_id)
        if user is None:
            raise NotFoundError(f"user '{user_id}' has no recorded behaviour")
        now = self.clock() if at is None else at
        catalog = self._catalog_or_none()
        config = self.settings.serving(catalog.learned_settings() if catalog else None)
        if catalog is not None:
            vectors = scale_vectors(user, catalog, now, config.half_lives, config.type_weights)
        else:  # no catalogue to embed the history in: the text-space residual alone
            vectors = {name: decay_to(state, now, config.half_lives[name]) for name, state in user.scales.items()
                       if name in config.half_lives}
        scales: dict[str, api_models.ScaleProfile] = {}
        for name, vector in vectors.items():
            strength = float(np.linalg.norm(vector))
            state = user.scales.get(name)
            closest_items, top_categories = _closest(catalog, vector, strength)
            scales[name] = api_models.ScaleProfile(
                half_life_seconds=config.half_lives[name], strength=round(strength, 6),
                decayed_from=_latest(state.t if state else None, user.history, now),
                closest_items=closest_items, top_categories=top_categories)
        blended = blend(vectors, config.blend_weights) if vectors else np.zeros(0)
        return api_models.ProfileResponse(
            user_id=user_id, event_count=user.event_count, first_event_ts=user.first_event_ts,
            last_event_ts=user.last_event_ts, as_of=now,
            strength=round(float(np.linalg.norm(blended)), 6) if blended.size else 0.0,
            recent_items=[item for item, _ in sorted(user.recent_items.items(), key=lambda p: -p[1])][:20],
            scales=scales, catalog_version=catalog.version if catalog else None)

    def forget(self, user_id: str) -> api_models.ForgetResponse:
        """A tombstone is written even when nothing is known yet (events in flight stay out); `forgotten` says
        whether there was state to forget."""
        user_id = path_identifier(user_id, "user_id")
        return api_models.ForgetResponse(user_id=user_id, forgotten=self.store.delete(user_id))

    def _user(self, user_id: str) -> UserInterest | None:
        """The user's state; None when unknown or deleted (a tombstone holds nothing personal)."""
        user = self.store.get(user_id)
        return user if user is not None and user.has_state else None

    def health(self) -> api_models.HealthResponse:
        catalog = self._catalog_or_none()
        space = None
        if catalog is not None:
            config = self.settings.serving(catalog.learned_settings())
            space = api_models.SpaceDescription(
                kind="hybrid" if catalog.is_hybrid else "text", dim=catalog.dim, basis=catalog.basis,
                settings={"half_lives": dict(config.half_lives), "blend_weights": dict(config.blend_weights),
                          "rating_weighting": config.type_weights.rating_weighting,
                          "popularity_weight": config.popularity_weight,
                          "learned": sorted(set(catalog.learned_settings() or {}) - config.pinned),
                          "pinned": sorted(config.pinned)})
        return api_models.HealthResponse(status="ok" if catalog else "degraded",
                                         catalog_version=catalog.version if catalog else None,
                                         item_count=len(catalog) if catalog else 0,
                                         encoder_fingerprint=self.encoder_fingerprint, space=space,
                                         refused=getattr(self.catalog, "last_refusal", None),
                                         deferred=getattr(self.catalog, "deferred", None))

    def _catalog_or_none(self) -> CatalogVersion | None:
        try:
            return self.catalog.current()
        except Exception:  # noqa: BLE001 - health and profile still answer without a catalogue
            return None


def _latest(residual_t: float | None, history: Sequence[Any], now: float) -> float | None:
    """The newest event time the scale's interest holds (at most `now`)."""
    times = [entry.ts for entry in history if entry.ts <= now] + ([residual_t] if residual_t is not None else [])
    return max(times) if times else None


def _closest(catalog: CatalogVersion | None, vector: NDArray[Any], strength: float,
             count: int = 5) -> tuple[list[api_models.ClosestItem], list[str]]:
    """The catalogue items closest to a scale's interest, and the categories they weigh most in."""
    if catalog is None or strength == 0.0 or vector.shape != (catalog.dim,):
        return [], []
    rows, scores = best_rows(catalog, (vector / strength).astype(np.float32), catalog.available, 20)
    tally: dict[str, float] = {}
    for row, score in zip(rows, scores, strict=True):
        for name in catalog.categories[row]:
            tally[name] = tally.get(name, 0.0) + float(score)
    return ([api_models.ClosestItem(item_id=catalog.item_ids[row], title=catalog.titles[row],
                                    score=round(float(score), 6)) for row, score in zip(rows[:count], scores[:count],
                                                                                       strict=True)],
            [name for name, _ in sorted(tally.items(), key=lambda p: -p[1])[:3]])


@dataclass
class EventPublisher:
    """POST /events: validate each event, put the accepted ones to Kinesis (partition key = user_id)."""

    stream_name: str
    attempts: int = 4
    settings: Settings = field(default_factory=Settings)  # the clock skew and age limits
    clock: Callable[[], float] = time.time

    def publish(self, request: api_models.EventsRequest) -> api_models.EventsResponse:
        """Each event on its own (EventsRequest bounds the batch): the valid ones to the stream, the others listed
        with the reason."""
        rejected: list[api_models.Rejection] = []
        accepted: list[tuple[int, dict[str, Any]]] = []
        limits = self.settings.time_limits(self.clock())
        for index, payload in enumerate(request.events):
            try:
                event = parse_event(payload, limits)
                data = encode_event(payload, event)  # one line of standard JSON, ids normalised, within 64 KiB
            except InvalidEventError as error:
                rejected.append(api_models.Rejection(index=index, error=str(error)))
                continue
            accepted.append((index, {"PartitionKey": event.user_id, "Data": data}))
        failed = self._put(accepted) if accepted else {}
        rejected.extend(api_models.Rejection(index=index, error=f"not stored, retry later: {error}")
                        for index, error in failed.items())
        rejected.sort(key=lambda entry: entry.index)
        return api_models.EventsResponse(accepted=len(accepted) - len(failed), rejected=rejected)

    def _put(self, entries: list[tuple[int, dict[str, Any]]]) -> dict[int, str]:
        """PutRecords with retries of the entries Kinesis refused (throttling); -> {index: error} left."""
        kinesis = aws.client("kinesis")
        pending = entries
        errors: dict[int, str] = {}
        for attempt in range(self.attempts):
            try:
                response = kinesis.put_records(StreamName=self.stream_name, Records=[r for _, r in pending])
            except Exception as error:  # noqa: BLE001 - reported per event below if it persists
                errors = {index: type(error).__name__ for index, _ in pending}
                time.sleep(0.05 * 2**attempt)
                continue
            retry = [(entry, result) for entry, result in zip(pending, response["Records"], strict=True)
                     if "ErrorCode" in result]
            errors = {entry[0]: result["ErrorCode"] for entry, result in retry}
            pending = [entry for entry, _ in retry]
            if not pending:
                return {}
            time.sleep(0.05 * 2**attempt)
        return errors
