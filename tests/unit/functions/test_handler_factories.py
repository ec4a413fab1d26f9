"""The handlers are built by factories that take their dependencies: the HTTP face is tested here with a fake
service and injected settings (no AWS), and every factory reads its settings when it builds the handler, so a
bad value fails the cold start."""

import importlib.util
import json
import sys
import unicodedata
from types import ModuleType

import pytest

from pulse.catalog.store import CatalogUnavailableError
from pulse.serving.api_models import ForgetResponse, HealthResponse, RecommendationsResponse
from pulse.serving.recommend import ScoredItem
from pulse.serving.service import NotFoundError
from pulse.settings import ApiSettings, CatalogSettings, ConfigurationError, IngestSettings, TrainSettings
from pulse_dev.local.functions import LambdaContext
from pulse_dev.local.http import response_body
from tests.builders import http_event
from tests.paths import REPO_ROOT


def function_module(name: str) -> ModuleType:
    """functions/<name>/app.py as a fresh module (every function's file is called app.py)."""
    spec = importlib.util.spec_from_file_location(f"factory_test_{name}", REPO_ROOT / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FakeService:
    """What the routes call, recording the calls; `failure` is raised instead of answering."""

    def __init__(self, failure: Exception | None = None):
        self.calls: list[tuple] = []
        self.failure = failure

    def recommendations(self, user_id, **options):
        self.calls.append(("recommendations", user_id, options))
        if self.failure:
            raise self.failure
        return RecommendationsResponse(user_id=user_id, strategy="personal", catalog_version="v1",
                                       items=[ScoredItem("i1", 0.5, "close to i0, which you engaged with")])

    def forget(self, user_id):
        self.calls.append(("forget", user_id))
        return ForgetResponse(user_id=user_id, forgotten=True)

    def health(self):
        return HealthResponse(status="ok", catalog_version="v1", item_count=1, encoder_fingerprint="enc")


@pytest.fixture(scope="module")
def api_module():
    return function_module("api")


def call(module, service, method, path, query="", *, settings=None, authorizer=None):
    settings = settings or ApiSettings()
    app = module.create_app(module.ApiDependencies(service=lambda: service, settings=lambda: settings))
    handler = module.make_handler(app)
    event = http_event(method, path, query)
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    response = handler(event, LambdaContext("ApiFunction"))
    raw = response_body(response)
    return response["statusCode"], json.loads(raw) if raw else None


def test_a_route_calls_the_injected_service_with_the_normalised_user_and_answers_its_model(api_module):
    service = FakeService()
    decomposed = unicodedata.normalize("NFD", "zoë")
    status, answer = call(api_module, service, "GET", f"/users/{decomposed}/recommendations", "k=3&category=news")
    assert status == 200
    assert answer == {"user_id": "zoë", "strategy": "personal", "catalog_version": "v1",
                      "items": [{"item_id": "i1", "score": 0.5, "reason": "close to i0, which you engaged with"}]}
    assert service.calls == [("recommendations", "zoë", {"k": 3, "exclude_seen": True, "category": "news",
                                                         "at": None})]


@pytest.mark.parametrize(("failure", "status", "message"), [
    (NotFoundError("no such user"), 404, "no such user"),
    (CatalogUnavailableError("no catalogue version can be served yet"), 503, "no catalogue version can be served yet"),
    (RuntimeError("a bug"), 500, "internal error (logged)"),
])
def test_the_services_errors_answer_with_their_status_and_an_error_body(api_module, failure, status, message):
    answer_status, answer = call(api_module, FakeService(failure), "GET", "/users/u1/recommendations")
    assert (answer_status, answer) == (status, {"error": message, "detail": None})


def test_the_injected_access_settings_decide_who_may_act_on_a_user(api_module):
    jwt = ApiSettings(api_auth="jwt", admin_scope="pulse/admin")
    own = {"jwt": {"claims": {"sub": "u1"}, "scopes": []}}
    service = FakeService()
    assert call(api_module, service, "DELETE", "/users/u1", settings=jwt, authorizer=own)[0] == 200
    status, answer = call(api_module, service, "DELETE", "/users/u2", settings=jwt, authorizer=own)
    assert status == 403 and "u2" not in json.dumps(answer)
    assert call(api_module, service, "DELETE", "/users/u2", settings=jwt)[0] == 401  # no verified identity
    assert service.calls == [("forget", "u1")]  # the refused calls never reached the service


def test_the_openapi_document_comes_from_the_routes_of_the_app_it_serves(api_module):
    status, document = call(api_module, FakeService(), "GET", "/openapi.json")
    assert status == 200
    assert {"/users/{user_id}/recommendations", "/events", "/health"} <= set(document["paths"])


def failing_settings(kind):
    def read():
        return kind.from_env({"PULSE_TTL_DAYS": "soon"})
    return read


@pytest.mark.parametrize(("name", "kind", "build"), [
    ("api", ApiSettings, lambda module, settings: module.create_app(module.ApiDependencies(settings=settings))),
    ("ingest", IngestSettings, lambda module, settings: module.make_handler(settings=settings)),
    ("catalog", CatalogSettings, lambda module, settings: module.make_handler(settings=settings)),
    ("train", TrainSettings, lambda module, settings: module.make_handler(settings=settings)),
])
def test_every_factory_reads_its_settings_when_it_builds_the_handler(name, kind, build):
    module = function_module(name)
    with pytest.raises(ConfigurationError, match="PULSE_TTL_DAYS='soon'"):
        build(module, failing_settings(kind))
    read: list[type] = []
    build(module, lambda: read.append(kind) or kind())
    assert read == [kind]
