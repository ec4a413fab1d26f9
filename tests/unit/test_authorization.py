"""The per-user rule (pulse.authorization): what API Gateway verified, and who may act on whom."""

import pytest

from pulse.authorization import AccessPolicy, Caller, ForbiddenError, UnauthorizedError
from pulse.privacy import user_ref
from pulse.settings import ApiSettings, ConfigurationError


def jwt_context(claims, scopes=None):
    return {"authorizer": {"jwt": {"claims": claims, "scopes": scopes}}}


def test_a_token_acts_on_the_user_its_claim_names_and_no_other():
    policy = AccessPolicy("jwt")
    caller = policy.caller(jwt_context({"sub": "alice"}))
    policy.require(caller, ["alice"], "forget")
    with pytest.raises(ForbiddenError, match="its own user .*claim 'sub'.*'pulse/admin'"):
        policy.require(caller, ["alice", "bob"], "post events for")


def test_the_claim_is_configurable_and_ids_compare_after_nfc():
    policy = AccessPolicy("jwt", user_id_claim="username")
    caller = policy.caller(jwt_context({"sub": "0b8f-uuid", "username": "rene\u0301"}))
    policy.require(caller, ["ren\u00e9"], "forget")
    with pytest.raises(ForbiddenError):
        policy.require(caller, ["0b8f-uuid"], "forget")


@pytest.mark.parametrize("context", [
    jwt_context({"sub": "ops"}, ["pulse/admin"]),
    jwt_context({"sub": "ops", "scope": "openid pulse/admin"}),
    jwt_context({"client_id": "backend", "scp": "pulse/admin"}),  # client credentials: no user claim
])
def test_the_admin_scope_acts_on_anyone(context):
    policy = AccessPolicy("jwt")
    caller = policy.caller(context)
    assert caller.admin and caller.ref == "admin"
    policy.require(caller, ["alice", "bob"], "forget")


def test_no_admin_scope_configured_means_nobody_is_admin():
    policy = AccessPolicy("jwt", admin_scope="")
    caller = policy.caller(jwt_context({"sub": "ops", "scope": "pulse/admin"}))
    with pytest.raises(ForbiddenError):
        policy.require(caller, ["alice"], "forget")


@pytest.mark.parametrize("mode, context", [
    ("jwt", {}), ("jwt", {"authorizer": {"jwt": {"claims": {}}}}), ("jwt", jwt_context({"email": "x@y"})),
    ("iam", {}), ("iam", jwt_context({"sub": "alice"})),
])
def test_a_mode_that_needs_a_verified_identity_refuses_a_request_without_one(mode, context):
    with pytest.raises(UnauthorizedError):
        AccessPolicy(mode).caller(context)


def test_an_iam_principal_is_a_trusted_backend_and_an_open_api_lets_anyone():
    backend = AccessPolicy("iam").caller({"authorizer": {"iam": {"userArn": "arn:aws:iam::1:role/app"}}})
    assert backend.may_act_for("anyone") and backend.ref == "backend"
    assert AccessPolicy("none").caller(None).may_act_for("anyone")


def test_the_caller_is_logged_by_reference_never_by_id():
    assert Caller("jwt", subject="alice").ref == user_ref("alice") != "alice"


def test_settings_read_the_mode_claim_and_scope_and_reject_an_unknown_mode():
    access = ApiSettings.from_env({"PULSE_API_AUTH": "JWT", "PULSE_USER_ID_CLAIM": "username",
                                   "PULSE_ADMIN_SCOPE": "pulse/admin"}).access
    assert (access.mode, access.user_id_claim, access.admin_scope) == ("jwt", "username", "pulse/admin")
    with pytest.raises(ConfigurationError, match="PULSE_API_AUTH"):
        ApiSettings.from_env({"PULSE_API_AUTH": "cognito"})
