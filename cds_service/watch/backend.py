"""SMART Backend Services for the watcher: discovery, client assertion, client_credentials token, re-use.

For each configured server (cds_service.watch.servers):

1. the token endpoint is discovered from ``{fhir}/.well-known/smart-configuration`` (cached for an hour;
   failures are not cached) unless configured; it must pass the same transport rule as the server;
2. a client assertion is signed with the client's private key (RFC 7523: ``iss`` = ``sub`` = client id,
   ``aud`` = the token endpoint, ``exp`` 4 minutes ahead, a fresh ``jti``, header ``kid``);
3. ``POST token_endpoint`` with ``grant_type=client_credentials`` and the configured scopes;
4. the access token is kept in this process until shortly before ``expires_in`` runs out and dropped at
   once when the FHIR server answers 401 (:meth:`TokenCache.invalidate`), so the next call re-authenticates.

Errors are :class:`BackendAuthError` with a short reason that is safe to log and to show on the worklist:
never the assertion, the token or a URL with a query.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import jwt
import requests

from cds_service.watch.servers import WatchServer
from cds_service.web.security import transport_allowed

WELL_KNOWN = "/.well-known/smart-configuration"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 240  # SMART: at most five minutes
DISCOVERY_TTL_S = 3600.0
HTTP_TIMEOUT_S = 10.0
MAX_BODY_BYTES = 256 * 1024


class BackendAuthError(Exception):
    """No usable access token; `reason` is short and free of secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class AccessToken:
    """A backend access token; never logged (repr hides it)."""

    value: str = field(repr=False)
    expires_at: float  # time.monotonic()
    scopes: frozenset[str]

    def usable(self, now: float) -> bool:
        return now < self.expires_at


class TokenCache:
    """One access token per server, fetched when missing or about to expire (thread-safe)."""

    def __init__(self, session: requests.Session, *, dev_mode: bool) -> None:
        self._session = session
        self._dev_mode = dev_mode
        self._tokens: dict[str, AccessToken] = {}
        self._endpoints: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def token(self, server: WatchServer) -> AccessToken:
        """A usable token for `server` (fetching one if needed); raises BackendAuthError."""
        with self._lock(server.base):
            current = self._tokens.get(server.base)
            if current is not None and current.usable(time.monotonic()):
                return current
            fresh = self._request_token(server)
            self._tokens[server.base] = fresh
            return fresh

    def invalidate(self, server: WatchServer, token: AccessToken) -> None:
        """Forget `token` (the FHIR server refused it): the next call re-authenticates."""
        with self._lock(server.base):
            if self._tokens.get(server.base) is token:
                del self._tokens[server.base]

    def _lock(self, base: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(base, threading.Lock())

    def token_endpoint(self, server: WatchServer) -> str:
        """The configured endpoint, or the discovered one (cached DISCOVERY_TTL_S)."""
        if server.token_endpoint is not None:
            return server.token_endpoint
        cached = self._endpoints.get(server.base)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        document = self._get_json(f"{server.base}{WELL_KNOWN}", "discovery")
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not transport_allowed(endpoint, self._dev_mode):
            raise BackendAuthError("discovery: no usable token_endpoint")
        methods = document.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise BackendAuthError("discovery: the server does not offer private_key_jwt")
        self._endpoints[server.base] = (endpoint, time.monotonic() + DISCOVERY_TTL_S)
        return endpoint

    def _request_token(self, server: WatchServer) -> AccessToken:
        endpoint = self.token_endpoint(server)
        started = time.monotonic()
        data = {
            "grant_type": "client_credentials",
            "scope": server.scopes,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(server, endpoint),
        }
        try:
            response = self._session.post(
                endpoint,
                data=data,
                headers={"Accept": "application/json"},
                timeout=HTTP_TIMEOUT_S,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise BackendAuthError("token request: timeout") from None
        except requests.RequestException:
            raise BackendAuthError("token request: connection failed") from None
        body = _json_object(response)
        if response.status_code != 200:
            error = (
                body.get("error") if isinstance(body.get("error"), str) else f"HTTP {response.status_code}"
            )
            raise BackendAuthError(f"token request refused ({str(error)[:40]})")
        value, token_type = body.get("access_token"), str(body.get("token_type", "")).lower()
        if not isinstance(value, str) or not value or token_type != "bearer":
            raise BackendAuthError("token response without a bearer access_token")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
        # Renew a little before the end: a fifth of the lifetime, at most a minute.
        margin = min(60.0, lifetime / 5)
        granted = body.get("scope")
        scopes = frozenset(granted.split()) if isinstance(granted, str) else frozenset(server.scopes.split())
        return AccessToken(value, started + lifetime - margin, scopes)

    def _get_json(self, url: str, what: str) -> dict[str, object]:
        try:
            response = self._session.get(
                url, headers={"Accept": "application/json"}, timeout=HTTP_TIMEOUT_S, allow_redirects=False
            )
        except requests.Timeout:
            raise BackendAuthError(f"{what}: timeout") from None
        except requests.RequestException:
            raise BackendAuthError(f"{what}: connection failed") from None
        if response.status_code != 200:
            raise BackendAuthError(f"{what}: HTTP {response.status_code}")
        return _json_object(response)


def client_assertion(server: WatchServer, token_endpoint: str) -> str:
    """The signed JWT that authenticates the client at `token_endpoint` (RFC 7523, SMART Backend Services)."""
    now = int(time.time())
    claims = {
        "iss": server.client_id,
        "sub": server.client_id,
        "aud": token_endpoint,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_S,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, server.private_key, algorithm=server.algorithm, headers={"kid": server.kid, "typ": "JWT"}
    )


def _json_object(response: requests.Response) -> dict[str, object]:
    if len(response.content) > MAX_BODY_BYTES:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
