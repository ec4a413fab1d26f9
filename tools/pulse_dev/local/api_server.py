"""Serves a Lambda API handler over HTTP, turning each request into an API Gateway HTTP API (v2) event."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pulse_dev.local.gateway_auth import ISSUER_PATH, PUBLIC_ROUTES, LocalIssuer, RequestRejectedError
from pulse_dev.local.http import api_gateway_event, response_body

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


Authorizer = Callable[..., dict[str, Any]]


class ApiServer(ThreadingHTTPServer):
    """`authorizer` plays the API's authorizer (None: an open API); `issuer` serves a local issuer's keys."""

    daemon_threads = True
    authorizer: Authorizer | None = None
    issuer: LocalIssuer | None = None


def serve_api(handler: Callable[[dict[str, Any]], dict[str, Any]], host: str, port: int) -> ApiServer:
    """Start serving in a daemon thread; returns the server (server_address has the bound port)."""
    container = threading.Lock()  # one request at a time per container, as Lambda runs a handler

    class Gateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(413, {"content-type": "application/json"},
                            json.dumps({"error": f"body over {MAX_BODY_BYTES} bytes"}).encode())
                return
            body = self.rfile.read(length) if length else None
            raw_path, _, query = self.path.partition("?")
            path = urllib.parse.unquote(raw_path)  # an HTTP API hands the function the decoded path
            try:
                text: str | bytes | None = body.decode("utf-8") if body is not None else None
            except UnicodeDecodeError:
                text = body  # sent base64-encoded, as API Gateway does for binary bodies
            if self._issuer_document(path):
                return
            headers = {key.lower(): value for key, value in self.headers.items()}
            event = api_gateway_event(self.command, path, query=query, headers=headers, body=text)
            authorizer = server.authorizer
            if authorizer is not None and (self.command, path) not in PUBLIC_ROUTES:
                try:
                    event["requestContext"]["authorizer"] = authorizer(
                        self.command, path, headers, body, url=f"http://{headers.get('host', host)}{self.path}")
                except RequestRejectedError as rejected:
                    self._reply(rejected.status, {"content-type": "application/json", "www-authenticate": "Bearer"},
                                json.dumps({"message": str(rejected)}).encode())
                    return
            with container:
                response = handler(event)
            headers = {key.lower(): str(value) for key, value in (response.get("headers") or {}).items()}
            self._reply(int(response.get("statusCode", 200)), headers, response_body(response),
                        response.get("cookies") or [])

        def _issuer_document(self, path: str) -> bool:
            if server.issuer is None or self.command != "GET" or not path.startswith(ISSUER_PATH + "/"):
                return False
            documents = {f"{ISSUER_PATH}/.well-known/openid-configuration": server.issuer.discovery,
                         f"{ISSUER_PATH}/.well-known/jwks.json": server.issuer.jwks}
            document = documents.get(path)
            status, payload = (200, document()) if document else (404, {"message": "Not Found"})
            self._reply(status, {"content-type": "application/json"}, json.dumps(payload).encode())
            return True

        def _reply(self, status: int, headers: dict[str, str], payload: bytes, cookies: Sequence[str] = ()) -> None:
            self.send_response(status)
            headers.setdefault("content-type", "application/json")
            headers["content-length"] = str(len(payload))
            for key, value in headers.items():
                self.send_header(key, value)
            for cookie in cookies:
                self.send_header("set-cookie", cookie)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("api %s", format % args)

    server = ApiServer((host, port), Gateway)
    threading.Thread(target=server.serve_forever, name="pulse-api", daemon=True).start()
    return server
