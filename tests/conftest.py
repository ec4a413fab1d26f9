"""Test-wide settings: no real AWS account is ever reachable, tracing is off (no X-Ray daemon)."""

import os
import secrets

os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "pulse", "POWERTOOLS_METRICS_NAMESPACE": "Pulse",
})
os.environ.pop("AWS_PROFILE", None)
# An explicit log-reference key for code run outside the local stack (which creates the template's secret).
os.environ["PULSE_LOG_HASH_KEY"] = secrets.token_hex(32)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def encoder():
    """The real int8 encoder (built by `make encoder`)."""
    from pulse_encoder import load_encoder

    return load_encoder()
