"""Schemathesis against the served /openapi.json: no 5xx, and every answer is what the document promises.

One local stack (moto + the real handlers) with a published catalogue and a few users, so the API answers
from its real state rather than "no catalogue yet" (503). Deterministic and bounded: derandomized Hypothesis,
MAX_EXAMPLES generated cases per operation in the fuzzing phase, plus schemathesis's coverage phase (boundary
values and invalid inputs derived from each parameter's schema). The tests after the fuzzing pin what it found.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pulse.catalog.build import publish_catalog
from pulse.catalog.store import S3CatalogRepository
from pulse_dev.local.runtime import LocalRuntime
from tests.integration.conftest import http_get as get
from tests.integration.conftest import http_request, wait_for
from tests.scenarios import catalog_items, catalog_lines

MAX_EXAMPLES = 60
KNOWN_USERS = ["fuzz-fan", "fuzz-critic", "fuzz-searcher"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    positive_data_acceptance,  # a schema-valid request is not refused with 400 (404 for an unknown id is fine)
    negative_data_rejection,  # a schema-invalid request is refused with a 4xx
]
# Left out on purpose:
# - unsupported_method / allow_header_conformance: they want 405 + Allow for methods the document does not list.
#   Every path reaches the function ($default route) and the resolver answers an unknown method + path with its
#   404 "no route" JSON, by design (test_local_runtime pins it); the coverage phase still sends such methods
#   (minus TRACE, which the local gateway's http.server refuses with 501 before the function sees it) and
#   every other check applies to their answers.
# - ignored_auth / object_level_authorization / missing_required_header: the document declares no security
#   scheme; the optional JWT authorizer is enforced by API Gateway, never by this function.
# - use_after_free / ensure_resource_availability: stateful checks, they need OpenAPI links (there are none).
# - max_response_time: timing on a shared machine would make the test flaky.
UNEXPECTED_METHODS = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]

CONFIG = {
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True, "unexpected-methods": UNEXPECTED_METHODS},
               "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
    # Real ids now and then, so the 200 answers (with their full bodies) are fuzzed too, not only 404s.
    "dictionaries": {"catalogue-items": {"values": [item["item_id"] for item in catalog_items()]},
                     "known-users": {"values": KNOWN_USERS}},
    "parameters": {"path.item_id": {"dictionary": "catalogue-items", "probability": 0.3},
                   "path.user_id": {"dictionary": "known-users", "probability": 0.3}},
}

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

cases_per_operation: Counter[str] = Counter()
statuses_per_operation: defaultdict[str, Counter[int]] = defaultdict(Counter)
sent_parameters: defaultdict[str, set[str]] = defaultdict(set)
failed_operations: set[str] = set()  # Hypothesis stops an operation at its first failure (then shrinks it)


def post(url, body: bytes, content_type="application/json"):
    return http_request(url, "POST", body, {"content-type": content_type})


@pytest.fixture(scope="module")
def runtime(encoder):
    """The local stack with a published catalogue and a few users who have personal recommendations."""
    running = LocalRuntime(aws_port=0, api_port=0).start()
    try:
        published = publish_catalog(catalog_lines(), encoder, S3CatalogRepository(running.stack.name_of(
            "AWS::S3::Bucket")))
        wait_for(lambda: get(running.api_url + "/health")[1]["catalog_version"] == published.version)
        now = time.time()
        running.put_events([{"event_id": f"fuzz-{user}-{index}", "user_id": user, "type": "like",
                             "item_id": f"m{1 + 8 * position + index}", "ts": now - 60 + index}
                            for position, user in enumerate(KNOWN_USERS[:2]) for index in range(3)]
                           + [{"event_id": "fuzz-search", "user_id": KNOWN_USERS[2], "type": "search",
                               "text": "animated family comedy", "ts": now}])
        running.wait_until_ingested()
        for user in KNOWN_USERS:
            status, answer = get(f"{running.api_url}/users/{user}/recommendations?k=3")
            assert (status, answer["strategy"]) == (200, "personal"), answer
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def active(runtime):
    """The handlers this module's API server runs in this process reach its stack, whatever ran before."""
    with runtime.stack.activated():
        yield


@pytest.fixture(scope="module")
def api_schema(runtime):
    return schemathesis.openapi.from_url(f"{runtime.api_url}/openapi.json", config=schemathesis.Config.from_dict(
        CONFIG), timeout=10)


@pytest.fixture(autouse=True)
def legacy_node_id(request):
    """schemathesis 4.32.5's lazy schemas read `Node._nodeid`, which pytest 9 replaced with `Node.nodeid`."""
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_answer_conforms_to_the_openapi_document(case):
    """Generated requests (valid and invalid) never get a 5xx nor an answer the document does not describe."""
    label = f"{case.method.upper()} {case.path}"
    cases_per_operation[label] += 1
    sent_parameters[label].update(f"path.{name}" for name in case.path_parameters or {})
    sent_parameters[label].update(f"query.{name}" for name in case.query or {})
    if case.body is not None:
        sent_parameters[label].add("body")
    try:
        response = case.call_and_validate(checks=CHECKS, timeout=30)
    except BaseException:  # schemathesis's FailureGroup is a BaseExceptionGroup
        failed_operations.add(label)
        raise
    statuses_per_operation[label][response.status_code] += 1


@pytest.mark.summary
def test_every_documented_operation_and_parameter_was_fuzzed(api_schema):
    """The fuzzing above reached every route of the document and sent every parameter it documents."""
    if not cases_per_operation:
        pytest.skip("the fuzzing test did not run in this session (deselected)")
    documented: dict[str, set[str]] = {}
    for path, methods in api_schema.raw_schema["paths"].items():
        for method, operation in methods.items():
            names = {f"{p['in']}.{p['name']}" for p in operation.get("parameters", [])}
            documented[f"{method.upper()} {path}"] = names | ({"body"} if "requestBody" in operation else set())
    print("\nschemathesis cases per operation (answers by status):")
    for label in sorted(documented):
        print(f"  {label:40} {cases_per_operation[label]:5}  {dict(sorted(statuses_per_operation[label].items()))}")
    print(f"  {'total':40} {sum(cases_per_operation[label] for label in documented):5}"
          f"  (+{sum(cases_per_operation.values()) - sum(cases_per_operation[label] for label in documented)}"
          " with undocumented methods)")
    for label, names in documented.items():
        if label in failed_operations:
            continue  # its failure is reported by the test above; the fuzzing of it stopped there
        least = MAX_EXAMPLES // 2 if names else 1  # without inputs, only a handful of requests are distinct
        assert cases_per_operation[label] >= least, f"{label} was hardly fuzzed"
        assert names <= sent_parameters[label], f"{label} never sent {names - sent_parameters[label]}"


def documented_statuses(api_schema, method, path):
    return {int(status) for status in api_schema.raw_schema["paths"][path][method]["responses"]}


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b'{"events": [{"event_id": "\xff"}]}'),  # not UTF-8
    ("text/plain", b'{"events": [{"event_id": "e"}]}'),
    ("application/octet-stream", b"\x00\xff binary"),
    ("multipart/form-data", b'{"events": [{"event_id": "e"}]}'),  # no boundary
    ("application/json", b'{"events": [{"ts": 1' + b"0" * 5000 + b"}]}"),  # beyond Python's int parsing limit
], ids=["not-utf8", "text-plain", "octet-stream", "multipart-without-boundary", "int-over-4300-digits"])
def test_a_body_that_is_not_utf8_json_is_refused_with_a_documented_client_error(runtime, api_schema, content_type,
                                                                                 body):
    """Found by the fuzzing: body decoding errors must be a documented 4xx, never a 500."""
    status, answer = post(f"{runtime.api_url}/events", body, content_type)
    assert 400 <= status < 500, answer
    assert status in documented_statuses(api_schema, "post", "/events"), (status, answer)
    assert answer["error"]


VALID_EVENT = {"event_id": "edge-1", "user_id": "edge-user", "type": "view", "item_id": "m1", "ts": 1_700_000_000}


@pytest.mark.parametrize(("event", "accepted"), [
    ({**VALID_EVENT, "ts": 10**400}, 0),  # a JSON number too large for a float
    ({**VALID_EVENT, "value": -(10**400)}, 0),
    ({**VALID_EVENT, "type": "search", "text": "caf\ud800"}, 0),  # a lone surrogate: no text to embed
    ({**VALID_EVENT, "session": "caf\ud800"}, 1),  # unknown fields are ignored, whatever they hold
], ids=["ts-over-float-range", "value-over-float-range", "text-lone-surrogate", "unknown-field-lone-surrogate"])
def test_events_at_the_edges_of_json_are_answered_per_event(runtime, event, accepted):
    """Found by the fuzzing: an event the parser cannot take is rejected in the 202 answer, not a 500."""
    status, answer = post(f"{runtime.api_url}/events", json.dumps({"events": [event]}).encode())
    assert (status, answer.get("accepted"), len(answer.get("rejected", []))) == (202, accepted, 1 - accepted), answer


@pytest.mark.parametrize("user_id", ["fuzz user", "fuzz-accentué", "fuzz-price€"], ids=["space", "accent", "euro"])
def test_a_user_id_that_needs_percent_encoding_is_read_back_through_the_api(runtime, user_id):
    """Contract 1 allows any non-control character in ids; the API must find such a user by its encoded path."""
    event = {"event_id": f"enc-{user_id}", "user_id": user_id, "type": "like", "item_id": "m1", "ts": time.time()}
    runtime.put_events([event])
    runtime.wait_until_ingested()
    status, answer = get(f"{runtime.api_url}/users/{urllib.parse.quote(user_id, safe='')}/profile")
    assert (status, answer.get("user_id"), answer.get("event_count")) == (200, user_id, 1), answer
