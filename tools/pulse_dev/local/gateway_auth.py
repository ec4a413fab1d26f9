"""The HTTP API's authorizers, played locally: a JWT authorizer (with a local issuer that really signs tokens and
publishes its JWKS) and AWS IAM (SigV4 signatures checked against the local stack's credentials).

What API Gateway checks, so does this: a JWT's `alg` (RS256), `kid` in the issuer's JWKS, signature, `iss`
equal to JwtIssuer, `aud` or `client_id` among JwtAudience, `exp`, `nbf` and `iat`; a SigV4 signature over the
signed headers, the access key and the date. What it passes on is the request context API Gateway gives the
function: `authorizer.jwt.claims` (every claim as a string) and `.scopes`, or `authorizer.iam`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER_PATH = "/local-issuer"
PUBLIC_ROUTES = frozenset({("GET", "/health"), ("GET", "/openapi.json")})


class RequestRejectedError(Exception):
    """The request does not pass the authorizer: (status, message), as API Gateway answers it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(number: int) -> str:
    return _b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


@dataclass
class LocalIssuer:
    """An OpenID-style issuer for the local stack: an RSA key kept at `key_path` (created once), its JWKS, and
    tokens signed with it (`pulse local token`)."""

    url: str
    key_path: Path

    def __post_init__(self) -> None:
        if self.key_path.exists():
            loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):  # the issuer signs RS256: only an RSA key will do
                raise ValueError(f"{self.key_path} holds a {type(loaded).__name__}, not an RSA private key")
            self._key: rsa.RSAPrivateKey = loaded
        else:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            self.key_path.write_bytes(self._key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
            self.key_path.chmod(0o600)
        numbers = self._key.public_key().public_numbers()
        self.kid = hashlib.sha256(f"{numbers.n}:{numbers.e}".encode()).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.url, "jwks_uri": f"{self.url}/.well-known/jwks.json",
                "id_token_signing_alg_values_supported": ["RS256"]}

    def token(self, subject: str, *, audience: str = "pulse", scopes: Sequence[str] = (), seconds: float = 3600,
              claims: Mapping[str, Any] | None = None, now: float | None = None) -> str:
        now = time.time() if now is None else now
        payload = {"iss": self.url, "sub": subject, "aud": audience, "iat": int(now), "nbf": int(now),
                   "exp": int(now + seconds), "jti": str(uuid.uuid4()), **({"scope": " ".join(scopes)} if scopes
                                                                          else {}), **(claims or {})}
        return sign(self._key, {"alg": "RS256", "typ": "JWT", "kid": self.kid}, payload)


def sign(key: rsa.RSAPrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def fetch_jwks(issuer: str) -> dict[str, Any]:
    """The issuer's keys through OpenID discovery ({issuer}/.well-known/openid-configuration -> jwks_uri)."""
    with urllib.request.urlopen(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10) as answer:
        jwks_uri = json.loads(answer.read())["jwks_uri"]
    with urllib.request.urlopen(jwks_uri, timeout=10) as answer:
        jwks: dict[str, Any] = json.loads(answer.read())
        return jwks


@dataclass
class JwtAuthorizer:
    issuer: str
    audiences: Sequence[str]
    keys: Callable[[str], Mapping[str, Any]] = fetch_jwks
    clock: Callable[[], float] = time.time
    _jwks: dict[str, Any] | None = field(default=None, repr=False)

    def __call__(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None,
                 url: str = "") -> dict[str, Any]:
        raw = headers.get("authorization", "").strip()
        if not raw:
            raise RequestRejectedError(401, "Unauthorized")
        token = raw[7:].strip() if raw[:7].lower() == "bearer " else raw
        try:
            claims, scopes = self.verify(token)
        except (ValueError, KeyError, TypeError, InvalidSignature):
            raise RequestRejectedError(401, "Unauthorized") from None
        return {"jwt": {"claims": {name: value if isinstance(value, str) else _claim_text(value)
                                   for name, value in claims.items()}, "scopes": scopes or None}}

    def verify(self, token: str) -> tuple[dict[str, Any], list[str]]:
        head, body, signature = token.split(".")
        header, claims = json.loads(_unb64url(head)), json.loads(_unb64url(body))
        if header.get("alg") != "RS256":
            raise ValueError("only RS256 tokens are accepted")
        key = self._key(header.get("kid"))
        key.verify(_unb64url(signature), f"{head}.{body}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        now = self.clock()
        if claims.get("iss") != self.issuer:
            raise ValueError("issuer")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not set(self.audiences) & {*audiences, claims.get("client_id")}:
            raise ValueError("audience")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now:
            raise ValueError("expired")
        for moment in ("nbf", "iat"):
            if moment in claims and (not isinstance(claims[moment], int | float) or claims[moment] > now):
                raise ValueError(moment)
        scopes = str(claims.get("scope") or claims.get("scp") or "").split()
        return claims, scopes

    def _key(self, kid: str | None) -> rsa.RSAPublicKey:
        for refresh in (False, True):  # a key rotated in since the last fetch: fetch once more
            if self._jwks is None or refresh:
                self._jwks = dict(self.keys(self.issuer))
            for jwk in self._jwks.get("keys", []):
                if jwk.get("kid") == kid and jwk.get("kty") == "RSA":
                    numbers = rsa.RSAPublicNumbers(int.from_bytes(_unb64url(jwk["e"]), "big"),
                                                   int.from_bytes(_unb64url(jwk["n"]), "big"))
                    return numbers.public_key()
        raise ValueError("unknown key id")


def _claim_text(value: Any) -> str:
    """API Gateway hands non-string claims over as text: arrays as '[a b]', numbers and booleans as written."""
    if isinstance(value, list):
        return "[" + " ".join(str(item) for item in value) + "]"
    return json.dumps(value) if isinstance(value, dict | bool) else str(value)


_SIGV4 = re.compile(r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<headers>[^,\s]+),\s*"
                    r"Signature=(?P<signature>[0-9a-f]{64})")


@dataclass
class SigV4Authorizer:
    """AWS IAM: a request signed (SigV4, service execute-api) with the local stack's credentials."""

    access_key: str
    secret_key: str
    account: str = "123456789012"
    clock: Callable[[], float] = time.time

    def __call__(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None,
                 url: str = "") -> dict[str, Any]:
        match = _SIGV4.fullmatch(headers.get("authorization", "").strip())
        if not match or match["key"] != self.access_key or match["service"] != "execute-api":
            raise RequestRejectedError(403, "Forbidden")
        stamp = headers.get("x-amz-date", "")
        try:
            signed_at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise RequestRejectedError(403, "Forbidden") from None
        if abs(self.clock() - signed_at) > 300 or not stamp.startswith(match["date"]):
            raise RequestRejectedError(403, "Signature expired")
        if match["signature"] != self._signature(method, url, headers, body, match, stamp):
            raise RequestRejectedError(
                403, "The request signature we calculated does not match the signature you provided")
        return {"iam": {"accessKey": self.access_key, "accountId": self.account, "callerId": self.access_key,
                        "userArn": f"arn:aws:iam::{self.account}:user/pulse-local", "userId": self.access_key}}

    def _signature(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   match: re.Match[str], stamp: str) -> str:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        signed = match["headers"].split(";")
        request = AWSRequest(method=method, url=url, data=body or b"",
                             headers={name: headers.get(name, "") for name in signed})
        request.context["timestamp"] = stamp
        signer = SigV4Auth(Credentials(self.access_key, self.secret_key), match["service"], match["region"])
        canonical = signer.canonical_request(request)
        signature: str = signer.signature(signer.string_to_sign(request, canonical), request)
        return signature
