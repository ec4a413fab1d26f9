"""HTTP requests as API Gateway HTTP API (payload v2.0) events, and handler answers back as HTTP."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl


def api_gateway_event(method: str, raw_path: str, *, query: str = "", headers: dict[str, str] | None = None,
                      body: bytes | str | None = None, stage: str = "$default", request_id: str | None = None,
                      now: float | None = None, authorizer: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event API Gateway (HTTP API, `$default` route, payload 2.0) hands to the Lambda integration;
    `authorizer` is what its authorizer verified (`{"jwt": {"claims", "scopes"}}` or `{"iam": {...}}`)."""
    headers = {key.lower(): value for key, value in (headers or {}).items()}
    parameters: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        parameters[key] = f"{parameters[key]},{value}" if key in parameters else value  # API Gateway joins repeats
    is_text = body is None or isinstance(body, str)
    encoded = body if body is None or isinstance(body, str) else base64.b64encode(body).decode("ascii")
    now = time.time() if now is None else now
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "local", "domainName": headers.get("host", "localhost"),
            "domainPrefix": "local", "http": {"method": method.upper(), "path": raw_path, "protocol": "HTTP/1.1",
                                               "sourceIp": "127.0.0.1", "userAgent": headers.get("user-agent", "")},
            "requestId": request_id or str(uuid.uuid4()), "routeKey": "$default", "stage": stage,
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": not is_text,
    }
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    if parameters:
        event["queryStringParameters"] = parameters
    if encoded is not None:
        event["body"] = encoded
    return event


def response_body(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode("utf-8")
