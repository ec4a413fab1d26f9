"""Who may act on which user (README, "Authorization"): the caller as API Gateway verified it, and the rule.

API Gateway checks the credentials (a JWT's signature, issuer, audience and expiry, or an IAM SigV4
signature); this module reads what it verified from the request context and decides per user:
- `jwt`: an end user's token acts only on the user named by its `user_id_claim` (default `sub`); a token with
  the admin scope acts on any user;
- `iam`: a signed AWS principal is one of your backends, trusted for every user (narrow it with IAM policies
  on the route ARNs, e.g. no `DELETE` for the web tier);
- `none`: an open API (only when the deployment says so explicitly).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulse.errors import PulseError
from pulse.privacy import user_ref

AUTH_MODES = ("jwt", "iam", "none")


class UnauthorizedError(PulseError, PermissionError):
    """No verified identity where the deployment requires one (401)."""


class ForbiddenError(PulseError, PermissionError):
    """A verified caller asked to act on a user it may not act on (403)."""


@dataclass(frozen=True)
class Caller:
    mode: str
    subject: str | None = None  # the user a JWT speaks for
    admin: bool = False

    def may_act_for(self, user_id: str) -> bool:
        if self.mode != "jwt" or self.admin:
            return True
        return self.subject is not None and _same_id(self.subject, user_id)

    @property
    def ref(self) -> str:
        """Who acted, for the logs, never a raw id: 'admin', 'backend', 'open' or the user's log reference."""
        if self.mode == "jwt":
            return "admin" if self.admin else user_ref(self.subject or "")
        return "backend" if self.mode == "iam" else "open"


@dataclass(frozen=True)
class AccessPolicy:
    mode: str = "none"
    user_id_claim: str = "sub"
    admin_scope: str = "pulse/admin"

    def __post_init__(self) -> None:
        if self.mode not in AUTH_MODES:
            raise ValueError(f"unknown API auth mode {self.mode!r}; expected one of {', '.join(AUTH_MODES)}")
        if not self.user_id_claim:
            raise ValueError("the user id claim must not be empty")

    def caller(self, request_context: Mapping[str, Any] | None) -> Caller:
        """The verified caller of an HTTP API (payload 2.0) request; UnauthorizedError when the mode needs one
        and the context carries none (a route left without an authorizer must not become open)."""
        if self.mode == "none":
            return Caller("none")
        authorizer = (request_context or {}).get("authorizer") or {}
        if self.mode == "iam":
            if not authorizer.get("iam"):
                raise UnauthorizedError("this API takes AWS SigV4-signed requests (IAM); the request carries no "
                                   "verified IAM identity")
            return Caller("iam")
        verified = authorizer.get("jwt") or {}
        claims = verified.get("claims") or {}
        if not claims:
            raise UnauthorizedError("this API takes a bearer token (JWT); the request carries no verified token")
        scopes = set(verified.get("scopes") or ())
        for claim in ("scope", "scp"):  # HTTP APIs pass claims as strings: scopes are space-separated
            scopes.update(str(claims.get(claim) or "").split())
        admin = bool(self.admin_scope) and self.admin_scope in scopes
        subject = claims.get(self.user_id_claim)
        if not subject and not admin:
            raise UnauthorizedError(f"the token has no '{self.user_id_claim}' claim to name its user")
        return Caller("jwt", subject=str(subject) if subject else None, admin=admin)

    def require(self, caller: Caller, user_ids: Iterable[str], action: str) -> None:
        """Forbidden unless the caller may act on every one of user_ids. The message names the rule, not ids."""
        if all(caller.may_act_for(user_id) for user_id in user_ids):
            return
        raise ForbiddenError(f"a token may {action} only its own user (claim '{self.user_id_claim}'); acting on "
                        f"another user needs the scope '{self.admin_scope}'")


def _same_id(left: str, right: str) -> bool:
    return unicodedata.normalize("NFC", left) == unicodedata.normalize("NFC", right)
