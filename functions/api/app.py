"""API function: the HTTP API (README, "The HTTP API") — the Lambda face only; the work is in pulse.serving.service."""

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse.authorization import Caller, ForbiddenError, UnauthorizedError
from pulse.catalog.store import CatalogUnavailableError
from pulse.observability import lambda_entry, observability
from pulse.privacy import user_ref
from pulse.serving.api_models import (
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    ForgetResponse,
    HealthResponse,
    ProfileResponse,
    RecommendationsResponse,
    SimilarResponse,
)
from pulse.serving.recommend import MAX_K
from pulse.serving.service import EventPublisher, NotFoundError, RecommendationService, path_identifier
from pulse.settings import ApiSettings
from pulse.wiring import api_service, api_settings, event_publisher

logger, tracer, metrics = observability()

UserId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
ItemId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items (1-{MAX_K})")]
ERROR_MEANINGS = {400: "invalid input (the error names the parameter and the limit)", 404: "not found",
                  401: "no verified identity (a bearer token or a SigV4 signature, as the deployment requires)",
                  403: "the token may not act on this user (its own user only, unless it has the admin scope)",
                  415: "the body is not JSON", 503: "no catalogue can be served yet"}


class PulseResolver(APIGatewayHttpResolver):
    """An id in a path may hold any character but '/': the HTTP API hands the path over already decoded, and
    Powertools' default segment pattern (word characters and a few symbols) would not route 'price€'."""

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "^{}$"):
        return re.compile(base_regex.format(re.sub(r"(<\w+>)", r"(?P\1[^/]+)", rule)))


@dataclass(frozen=True)
class ApiDependencies:
    """What the routes work through, each built on first use (by default the container's; tests pass fakes)."""

    service: Callable[[], RecommendationService] = api_service
    publisher: Callable[[], EventPublisher] = event_publisher
    settings: Callable[[], ApiSettings] = api_settings


def create_app(dependencies: ApiDependencies = ApiDependencies()) -> PulseResolver:
    """The routes and error handlers over `dependencies`. The settings are read now, at cold start: a bad value
    fails the start, naming its variable."""
    dependencies.settings()
    app = PulseResolver(enable_validation=True)
    add_routes(app, dependencies)
    add_error_handlers(app)
    return app


def answer(model, status: int = 200, description: str = "the answer") -> dict:
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


def errors(*statuses: int) -> dict:
    """OpenAPI responses for the JSON errors a route answers (every error body is an ErrorResponse)."""
    return {status: {"description": ERROR_MEANINGS[status],
                     "content": {"application/json": {"model": ErrorResponse}}} for status in (*statuses, 401, 403)}


def add_routes(app: PulseResolver, dependencies: ApiDependencies) -> None:
    service = dependencies.service

    def authorized(action: str, *user_ids: str) -> Caller:
        """The verified caller, if it may `action` every one of user_ids (README, "Authorization")."""
        policy = dependencies.settings().access
        caller = policy.caller(app.current_event.raw_event.get("requestContext"))
        policy.require(caller, user_ids, action)
        logger.append_keys(actor=caller.ref)  # who acted, as a log reference: never a raw id
        return caller

    def acting_on(user_id: str) -> str:
        """The path's user id normalised like the ingest's (NFC), logged as a reference, never the id itself."""
        user_id = path_identifier(user_id, "user_id")
        logger.append_keys(user=user_ref(user_id))
        return user_id

    @app.get("/users/<user_id>/recommendations", summary="Top-k items for a user's current interest",
             responses={**answer(RecommendationsResponse), **errors(400, 404, 503)})
    def recommendations(user_id: UserId, k: K = 10, exclude_seen: bool = True,
                        category: Annotated[str | None, Query(max_length=128)] = None,
                        at: Annotated[float | None, Query(ge=0, description="score as of this epoch second")] = None,
                        ) -> RecommendationsResponse:
        user_id = acting_on(user_id)
        authorized("read the recommendations of", user_id)
        result = service().recommendations(user_id, k=k, exclude_seen=exclude_seen, category=category, at=at)
        metrics.add_metric(name=f"Recommendations{result.strategy.title()}", unit=MetricUnit.Count, value=1)
        return result

    @app.get("/items/<item_id>/similar", summary="Items nearest to an item",
             responses={**answer(SimilarResponse), **errors(400, 404, 503)})
    def similar(item_id: ItemId, k: K = 10) -> SimilarResponse:
        authorized("read items for")
        return service().similar(item_id, k=k)

    @app.get("/users/<user_id>/profile", summary="What Pulse believes about a user",
             responses={**answer(ProfileResponse), **errors(400, 404)})
    def profile(user_id: UserId, at: Annotated[float | None, Query(ge=0)] = None) -> ProfileResponse:
        user_id = acting_on(user_id)
        authorized("read the profile of", user_id)
        return service().profile(user_id, at=at)

    @app.delete("/users/<user_id>", summary="Forget a user (interest state and recent items)",
                responses={**answer(ForgetResponse), **errors(400, 404)})
    def forget(user_id: UserId) -> ForgetResponse:
        user_id = acting_on(user_id)
        authorized("forget", user_id)
        result = service().forget(user_id)
        logger.info("user forgotten" if result.forgotten else "forget: nothing stored for this user")
        return result

    @app.post("/events", summary="Validate behaviour events and put the accepted ones to Kinesis",
              responses={**answer(EventsResponse, 202, "accepted events were put to the stream; the others are "
                                                       "listed with their error"), **errors(400, 404, 415)})
    def post_events(body: EventsRequest) -> Response[EventsResponse]:
        authorized("post events for", *{event["user_id"] for event in body.events
                                        if isinstance(event.get("user_id"), str)})
        result = dependencies.publisher().publish(body)
        metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=result.accepted)
        return Response(202, content_types.APPLICATION_JSON, result)

    @app.get("/health", summary="Catalogue version, item count, encoder fingerprint")
    def health() -> HealthResponse:
        return service().health()

    @lru_cache(maxsize=1)
    def openapi_document() -> str:
        """Generated from the routes once per container."""
        return app.get_openapi_json_schema(title="Pulse", version="1.0.0",
                                           description="Real-time interest capture for recommendations")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi():
        return Response(200, content_types.APPLICATION_JSON, openapi_document())


def error(status: int, message: str, detail=None) -> Response:
    return Response(status, content_types.APPLICATION_JSON, ErrorResponse(error=message, detail=detail).model_dump())


def add_error_handlers(app: PulseResolver) -> None:
    """Every error answers as an ErrorResponse with its status; an unexpected one is logged and answers 500."""

    @app.exception_handler(RequestValidationError)
    def invalid_request(exc: RequestValidationError) -> Response:
        problems = [{"location": ".".join(str(part) for part in problem.get("loc", ())),
                     "message": problem.get("msg")} for problem in exc.errors()]
        summary = "; ".join(f"{p['location']}: {p['message']}" for p in problems) or "invalid request"
        return error(400, f"invalid request: {summary}", problems)

    @app.exception_handler(UnauthorizedError)
    def unauthorized(exc: UnauthorizedError) -> Response:
        return error(401, str(exc))

    @app.exception_handler(ForbiddenError)
    def forbidden(exc: ForbiddenError) -> Response:
        logger.warning("forbidden: the caller may not act on this user")
        return error(403, str(exc))

    @app.exception_handler(NotFoundError)
    def not_found_thing(exc: NotFoundError) -> Response:
        return error(404, str(exc))

    @app.exception_handler(CatalogUnavailableError)
    def no_catalogue(exc: CatalogUnavailableError) -> Response:
        return error(503, str(exc))

    @app.not_found
    def unknown_route(exc: Exception) -> Response:
        event = app.current_event
        return error(404, f"no route {event.http_method} {event.path}")

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error")
        return error(500, "internal error (logged)")


def make_handler(app: PulseResolver) -> Callable[[dict, LambdaContext], dict]:
    """The Lambda handler around `app`: Powertools' logger, tracer and metrics, and the body checks Powertools
    would answer with a 500."""

    @lambda_entry(logger, tracer, metrics, correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        problem = body_problem(event)
        if problem is not None:  # Powertools would fail on such a body with a 500
            status, message = problem
            return {"statusCode": status, "headers": {"Content-Type": content_types.APPLICATION_JSON},
                    "body": json.dumps(ErrorResponse(error=message, detail=None).model_dump()),
                    "isBase64Encoded": False}
        return app.resolve(event, context)

    return lambda_handler


def body_problem(event: dict) -> tuple[int, str] | None:
    """A request body that is not JSON (415) or not UTF-8 JSON (400); None when it is fine or absent."""
    raw = event.get("body")
    if not raw:
        return None
    headers = {key.lower(): value for key, value in (event.get("headers") or {}).items()}
    media_type = headers.get("content-type", content_types.APPLICATION_JSON).split(";")[0].strip().lower()
    if media_type != content_types.APPLICATION_JSON and not media_type.endswith("+json"):
        return 415, f"the body must be {content_types.APPLICATION_JSON}, not {media_type or 'untyped'}"
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
        json.loads(data.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError) as error:  # binascii.Error and JSONDecodeError are ValueErrors
        return 400, f"invalid request: the body is not UTF-8 JSON ({type(error).__name__}: {str(error)[:200]})"
    return None


app = create_app()
lambda_handler = make_handler(app)
