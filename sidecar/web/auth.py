"""Bearer tokens: which paths need which token, checked in constant time.

The scope comes from the path prefix, not from the matched route, so an unknown path under
/api/v1 asks for a token before it says 404 and a new route cannot be left open by mistake.
"""

from __future__ import annotations

import enum
import hmac

from sidecar.web.problems import Problem

__all__ = ["API_PREFIX", "Scope", "TokenGuard", "scope_of"]

API_PREFIX = "/api/v1"
_ADMIN_PREFIX = API_PREFIX + "/admin/"
_REALM = 'Bearer realm="sidecar"'


class Scope(enum.Enum):
    """Who may call a path."""

    OPEN = "open"  # /livez, /readyz, /openapi.json
    API = "api"  # /api/v1/*
    ADMIN = "admin"  # /api/v1/admin/*
    METRICS = "metrics"  # /metrics


def scope_of(path: str) -> Scope:
    """The scope of a request path (or of a URL rule: its static prefix decides)."""
    if path.startswith(_ADMIN_PREFIX):
        return Scope.ADMIN
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return Scope.API
    if path == "/metrics":
        return Scope.METRICS
    return Scope.OPEN


def _bearer(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "surrogateescape")


def _matches(given: bytes, expected: bytes | None) -> bool:
    return expected is not None and hmac.compare_digest(given, expected)


class TokenGuard:
    """Checks the Authorization header against the configured tokens.

    With an admin token, /api/v1/admin/* need it and the API token gets 403 there; the admin
    token is also accepted on every other /api/v1 route. Unset tokens leave their scope open.
    """

    def __init__(self, api: str | None, admin: str | None, metrics: str | None) -> None:
        self._api = api.encode() if api else None
        self._admin = admin.encode() if admin else None
        self._metrics = metrics.encode() if metrics else None
        # Tokens are fixed for the guard's life: which scopes need one is decided once, not on
        # every request.
        self._required = {
            Scope.OPEN: False,
            Scope.API: self._api is not None,
            Scope.ADMIN: self._admin is not None or self._api is not None,
            Scope.METRICS: self._metrics is not None,
        }

    def requires_token(self, scope: Scope) -> bool:
        """True if requests in `scope` must carry a token."""
        return self._required[scope]

    def check(self, scope: Scope, authorization: str | None) -> None:
        """Return if the request may go on; raise a 401 or 403 Problem otherwise."""
        if not self.requires_token(scope):
            return
        given = _bearer(authorization)
        if given is None:
            raise Problem(
                "unauthorized", "a bearer token is required", headers={"WWW-Authenticate": _REALM}
            )
        # Each candidate is compared in full, whatever the outcome of the others.
        if scope is Scope.METRICS:
            allowed = _matches(given, self._metrics)
            forbidden = False
        elif scope is Scope.ADMIN and self._admin is not None:
            allowed = _matches(given, self._admin)
            forbidden = _matches(given, self._api)
        else:
            allowed = _matches(given, self._api) | _matches(given, self._admin)
            forbidden = False
        if allowed:
            return
        if forbidden:
            raise Problem("forbidden", "this route needs the admin token")
        raise Problem(
            "unauthorized",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": _REALM + ', error="invalid_token"'},
        )
