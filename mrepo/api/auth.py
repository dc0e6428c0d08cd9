"""Request authentication: bearer tokens, roles and anonymous read, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .middleware import LOG_STATE
from .tokens import ROLES, LiveTokens, Principal, TokenStore

bearer = HTTPBearer(auto_error=False, description="A token made by `mrepo token add`.")
ANONYMOUS = Principal("anonymous", "read")


class AccessPolicy:
    """Tokens plus the anonymous-read switch of one server."""

    def __init__(self, tokens: TokenStore | LiveTokens, anonymous_read: bool):
        self.tokens = tokens
        self.anonymous_read = anonymous_read

    def principal(self, authorization: str | None) -> Principal | None:
        """Who sent ``Authorization`` (None: no header). Raises 401 for a malformed or unknown token."""
        if authorization is None:
            return None
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "Authorization must be 'Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        found = self.tokens.authenticate(secret.strip())
        if found is None:
            raise ApiError(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def check(self, authorization: str | None, role: str) -> Principal:
        """The principal if it holds ``role``; 401 without a usable token, 403 when the role is too low."""
        return self.authorize(self.principal(authorization), role)

    def authorize(self, who: Principal | None, role: str) -> Principal:
        """``who`` (None: anonymous) if it may act with ``role``; else 401 or 403."""
        if who is None:
            if role == "read" and self.anonymous_read:
                return ANONYMOUS
            raise ApiError(401, f"this request needs a token with role {role}",
                           headers={"WWW-Authenticate": "Bearer"})
        if ROLES[who.role] < ROLES[role]:
            raise ApiError(403, f"token {who.name!r} has role {who.role}; this request needs {role}")
        return who


def require(policy: AccessPolicy, role: str) -> Callable[..., Principal]:
    """Dependency: the request's principal, which must hold ``role``."""

    def dependency(request: Request,
                   _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        who = policy.principal(request.headers.get("authorization"))
        state = request.scope.get(LOG_STATE)
        if isinstance(state, dict):
            state["token"] = who.name if who else None
        who = policy.authorize(who, role)
        if isinstance(state, dict):
            state["token"] = who.name
        return who

    return dependency
