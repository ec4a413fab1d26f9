"""Authorization on the local stack, as deployed (README, "Authorization"): the local stack plays API Gateway's
JWT authorizer with a local issuer whose tokens are really signed, and IAM with real SigV4 signatures.

Audit findings reproduced here: with JwtIssuer set, mallory's valid token could DELETE alice (200, forgotten);
any token could read any profile and post events as anyone."""

import base64
import json
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pulse_dev.local.gateway_auth import LocalIssuer, sign
from pulse_dev.local.stack import LOCAL_CREDENTIALS
from tests.integration.conftest import http_request, running_runtime

pytestmark = pytest.mark.slow  # two local runtimes of its own


def call(url, method="GET", body=None, token=None, headers=None):
    """-> (status, JSON body) over real HTTP."""
    return http_request(url, method, json.dumps(body).encode() if body is not None else None, {
        "content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {}),
        **(headers or {})})


@pytest.fixture(scope="module")
def jwt_stack(tmp_path_factory):
    with running_runtime(train_every_seconds=0, local_issuer=True,
                         issuer_key=tmp_path_factory.mktemp("issuer") / "key.pem") as running:
        yield running


@pytest.fixture
def stack(jwt_stack):
    with jwt_stack.stack.activated():
        yield jwt_stack


def event(user, n=0):
    return {"event_id": f"auth-{user}-{n}-{time.time_ns()}", "user_id": user, "type": "search",
            "text": "space opera", "ts": time.time()}


def test_the_local_stack_says_it_plays_the_jwt_authorizer_and_serves_its_keys(stack):
    described = stack.describe()
    assert described["api_auth"] == "jwt" and described["jwt_issuer"] == f"{stack.api_url}/local-issuer"
    status, discovery = call(f"{stack.api_url}/local-issuer/.well-known/openid-configuration")
    assert status == 200 and discovery["issuer"] == described["jwt_issuer"]
    status, keys = call(discovery["jwks_uri"])
    assert status == 200 and keys["keys"][0]["kid"] == stack.issuer.kid


def test_without_a_token_only_health_and_the_openapi_document_answer(stack):
    assert call(f"{stack.api_url}/health")[0] == 200
    assert call(f"{stack.api_url}/openapi.json")[0] == 200
    for method, path in (("GET", "/users/alice/profile"), ("GET", "/users/alice/recommendations"),
                         ("DELETE", "/users/alice"), ("GET", "/items/m1/similar"), ("GET", "/no/such/route")):
        assert call(f"{stack.api_url}{path}", method)[0] == 401, (method, path)


def test_a_token_acts_on_its_own_user_only(stack):
    alice, mallory = stack.issuer.token("alice"), stack.issuer.token("mallory")
    assert call(f"{stack.api_url}/events", "POST", {"events": [event("alice")]}, alice)[0] == 202

    status, body = call(f"{stack.api_url}/users/alice", "DELETE", token=mallory)
    assert status == 403, body  # the audit: 200 {"forgotten": true}
    assert "its own user" in body["error"] and "pulse/admin" in body["error"]
    assert "alice" not in body["error"] and "mallory" not in body["error"]
    for path in ("/users/alice/profile", "/users/alice/recommendations"):
        assert call(f"{stack.api_url}{path}", token=mallory)[0] == 403
    status, body = call(f"{stack.api_url}/events", "POST", {"events": [event("mallory"), event("alice")]}, mallory)
    assert status == 403, body
    assert call(f"{stack.api_url}/events", "POST", {"events": [event("mallory")]}, mallory)[0] == 202

    assert call(f"{stack.api_url}/users/alice/recommendations", token=alice)[0] in (200, 503)
    assert call(f"{stack.api_url}/users/alice", "DELETE", token=alice)[0] == 200


def test_the_admin_scope_acts_on_any_user(stack):
    admin = stack.issuer.token("ops-console", scopes=["pulse/admin"])
    assert call(f"{stack.api_url}/users/alice", "DELETE", token=admin)[0] == 200
    assert call(f"{stack.api_url}/events", "POST", {"events": [event("alice"), event("bob")]}, admin)[0] == 202
    other_scope = stack.issuer.token("ops-console", scopes=["pulse/read"])
    assert call(f"{stack.api_url}/users/alice", "DELETE", token=other_scope)[0] == 403


def test_forged_expired_and_foreign_tokens_are_refused_by_the_authorizer(stack, tmp_path):
    now = time.time()
    forger = LocalIssuer(stack.issuer.url, tmp_path / "other.pem")  # same issuer URL, another key
    head, body, signature = stack.issuer.token("mallory").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "alice"
    tampered_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = ".".join([base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode(),
                         tampered_body, ""])
    tokens = {
        "another key": forger.token("alice"),
        "expired": stack.issuer.token("alice", seconds=-10),
        "not yet valid": stack.issuer.token("alice", now=now + 3600),
        "another audience": stack.issuer.token("alice", audience="someone-else"),
        "another issuer": sign(stack.issuer._key, {"alg": "RS256", "kid": stack.issuer.kid},
                               {"iss": "https://elsewhere", "sub": "alice", "aud": "pulse", "exp": now + 60}),
        "tampered claims": f"{head}.{tampered_body}.{signature}",
        "alg none": unsigned,
        "garbage": "not-a-token",
    }
    for name, token in tokens.items():
        status, answer = call(f"{stack.api_url}/users/alice/profile", token=token)
        assert status == 401, (name, status, answer)
    client_credentials = sign(stack.issuer._key, {"alg": "RS256", "kid": stack.issuer.kid},
                              {"iss": stack.issuer.url, "sub": "alice", "client_id": "pulse", "exp": now + 60})
    assert call(f"{stack.api_url}/users/alice/profile", token=client_credentials)[0] in (200, 404)


@pytest.fixture(scope="module")
def started_iam_stack():
    with running_runtime(train_every_seconds=0, parameters={"OpenApi": "false"}) as running:
        yield running


def signed(url, method="GET", secret=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = AWSRequest(method=method, url=url, data=data, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], secret), "execute-api", "us-east-1").add_auth(request)
    return dict(request.headers.items())


@pytest.fixture
def iam_stack(started_iam_stack):
    with started_iam_stack.stack.activated():
        yield started_iam_stack


def test_by_default_the_api_takes_only_sigv4_signed_requests(iam_stack):
    assert iam_stack.describe()["api_auth"] == "iam"
    url = f"{iam_stack.api_url}/users/iam-probe-{time.time_ns()}/profile"
    assert call(url)[0] == 403
    assert call(url, headers=signed(url, secret="wrong"))[0] == 403
    assert call(url, headers=signed(url))[0] == 404  # through the authorizer: this user has no behaviour
    events = f"{iam_stack.api_url}/events"
    body = {"events": [event("alice"), event("bob")]}  # a backend acts for any user
    assert call(events, "POST", body, headers=signed(events, "POST", body=body))[0] == 202
    assert call(f"{iam_stack.api_url}/health")[0] == 200
