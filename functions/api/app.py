"""API function: the HTTP API of DESIGN.md (contract 2) — the Lambda face only; the work is in pulse.service."""

from functools import lru_cache
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse.api_models import (
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    ForgetResponse,
    HealthResponse,
    ProfileResponse,
    RecommendationsResponse,
    SimilarResponse,
)
from pulse.catalog_store import CatalogUnavailable
from pulse.privacy import user_ref
from pulse.recommend import MAX_K
from pulse.runtime import api_service, event_publisher
from pulse.service import BadRequest, NotFound

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayHttpResolver(enable_validation=True)

UserId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
ItemId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items (1-{MAX_K})")]


@app.get("/users/<user_id>/recommendations", summary="Top-k items for a user's current interest")
def recommendations(user_id: UserId, k: K = 10, exclude_seen: bool = True,
                    category: Annotated[str | None, Query(max_length=128)] = None,
                    at: Annotated[float | None, Query(ge=0, description="score as of this epoch second")] = None,
                    ) -> RecommendationsResponse:
    logger.append_keys(user=user_ref(user_id))  # never the id itself
    answer = api_service().recommendations(user_id, k=k, exclude_seen=exclude_seen, category=category, at=at)
    metrics.add_metric(name=f"Recommendations{answer['strategy'].title()}", unit=MetricUnit.Count, value=1)
    return answer


@app.get("/items/<item_id>/similar", summary="Items nearest to an item")
def similar(item_id: ItemId, k: K = 10) -> SimilarResponse:
    return api_service().similar(item_id, k=k)


@app.get("/users/<user_id>/profile", summary="What Pulse believes about a user")
def profile(user_id: UserId, at: Annotated[float | None, Query(ge=0)] = None) -> ProfileResponse:
    logger.append_keys(user=user_ref(user_id))
    return api_service().profile(user_id, at=at)


@app.delete("/users/<user_id>", summary="Forget a user (interest state and recent items)")
def forget(user_id: UserId) -> ForgetResponse:
    logger.append_keys(user=user_ref(user_id))
    return api_service().forget(user_id)


@app.post("/events", summary="Validate behaviour events and put the accepted ones to Kinesis")
def post_events(body: EventsRequest) -> Response[EventsResponse]:
    answer = event_publisher().publish(body.model_dump())
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=answer["accepted"])
    return Response(202, content_types.APPLICATION_JSON, EventsResponse(**answer))


@app.get("/health", summary="Catalogue version, item count, encoder fingerprint")
def health() -> HealthResponse:
    return api_service().health()


@app.get("/openapi.json", include_in_schema=False)
def openapi():
    return Response(200, content_types.APPLICATION_JSON, openapi_document())


@lru_cache(maxsize=1)
def openapi_document() -> str:
    """Generated from the routes once per container."""
    return app.get_openapi_json_schema(title="Pulse", version="1.0.0",
                                       description="Real-time interest capture for recommendations")


def error(status: int, message: str, detail=None) -> Response:
    return Response(status, content_types.APPLICATION_JSON, ErrorResponse(error=message, detail=detail).model_dump())


@app.exception_handler(RequestValidationError)
def invalid_request(exc: RequestValidationError) -> Response:
    problems = [{"location": ".".join(str(part) for part in problem.get("loc", ())), "message": problem.get("msg")}
                for problem in exc.errors()]
    summary = "; ".join(f"{p['location']}: {p['message']}" for p in problems) or "invalid request"
    return error(400, f"invalid request: {summary}", problems)


@app.exception_handler(BadRequest)
def bad_request(exc: BadRequest) -> Response:
    return error(400, str(exc), exc.detail)


@app.exception_handler(NotFound)
def not_found_thing(exc: NotFound) -> Response:
    return error(404, str(exc))


@app.exception_handler(CatalogUnavailable)
def no_catalogue(exc: CatalogUnavailable) -> Response:
    return error(503, str(exc))


@app.not_found
def unknown_route(exc: Exception) -> Response:
    event = app.current_event
    return error(404, f"no route {event.http_method} {event.path}")


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error")
    return error(500, "internal error (logged)")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
