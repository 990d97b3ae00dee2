"""CDS client JWT verification ("Trusting CDS Clients", CDS Hooks 2.0), the default CLIENT_AUTH.

Checks, in order (the first failure is the 401's logged reason; the response never says which):

1. `Authorization: Bearer <compact JWS>` is present and well-formed;
2. `iss` (read unverified, only to pick the client) is a trusted client;
3. `alg` is on that client's allowlist (ES384/RS384 by default; HS*/none can never be configured);
4. `kid` names a key of the client: inline JWKS first, then the header's `jku` when that exact URL is on
   the client's `jku_allowlist` (any other jku is refused before any network call), else its `jwks_url`;
   the key's own type must fit `alg` (keys.py), so a public key can never be used as an HMAC secret;
5. signature, `aud` == the exact endpoint URL, `iss`, `exp`, `iat`/`nbf` with leeway (PyJWT), all of
   iss/aud/exp/iat/jti present, exp - iat <= the lifetime cap;
6. `tenant` is allowlisted when the client lists tenants;
7. (iss, jti) was never seen while unexpired (ReplayStore, shared by all workers).

Reasons are logged with the issuer, kid and jti at most; the token itself never reaches a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Request

from cds_service.auth.clients import ClientRegistry, TrustedClient
from cds_service.auth.jwks import JwksCache, JwksUnavailable
from cds_service.auth.keys import VerificationKey
from cds_service.auth.replay import ReplayStore
from cds_service.errors import Unauthorized
from cds_service.web.security import ClientIdentity

MAX_TOKEN_CHARS = 16 * 1024
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
_PYJWT_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "iat or nbf in the future beyond the leeway"),
    (jwt.InvalidAudienceError, "aud is not this endpoint"),
    (jwt.InvalidIssuerError, "iss mismatch"),
    (jwt.InvalidSignatureError, "signature verification failed"),
    (jwt.MissingRequiredClaimError, "a required claim is missing"),
    (jwt.InvalidIssuedAtError, "iat is not a number"),
    (jwt.DecodeError, "malformed JWT"),
)


@dataclass(frozen=True, slots=True)
class JwtRules:
    leeway_s: float = 60.0
    max_lifetime_s: int = 3600


class JwtClientAuth:
    """`auth(request, expected_aud) -> ClientIdentity`; raises Unauthorized with a loggable reason."""

    def __init__(
        self, clients: ClientRegistry, jwks: JwksCache, replay: ReplayStore, rules: JwtRules
    ) -> None:
        self.clients, self.jwks, self.replay, self.rules = clients, jwks, replay, rules

    def __call__(self, request: Request, expected_aud: str) -> ClientIdentity:
        token = bearer_token(request.headers.get("Authorization"))
        header, unverified = _peek(token)
        client = self._client(unverified)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in client.algorithms:
            raise Unauthorized(f"alg {str(alg)[:20]!r} not allowed for issuer {client.issuer!r}")
        key = self._key(client, header, alg)
        claims = self._decode(token, key, alg, client, expected_aud)
        tenant = _check_tenant(client, claims)
        jti, expires_at = claims["jti"], int(_seconds(claims, "exp") + self.rules.leeway_s) + 1
        if not self.replay.claim(client.issuer, jti, expires_at):
            raise Unauthorized(f"replayed jti {jti!r} from issuer {client.issuer!r}")
        return ClientIdentity(client.issuer, tenant, jti, True, client.fhir_servers)

    def _client(self, unverified: dict[str, Any]) -> TrustedClient:
        issuer = unverified.get("iss")
        client = self.clients.find(issuer) if isinstance(issuer, str) else None
        if client is None:
            raise Unauthorized(f"unknown issuer {_printable(issuer)!r}")
        return client

    def _key(self, client: TrustedClient, header: dict[str, Any], alg: str) -> VerificationKey:
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= 256:
            raise Unauthorized(f"missing or malformed kid (issuer {client.issuer!r})")
        key = self._lookup(client, header.get("jku"), kid)
        if key is None:
            raise Unauthorized(f"unknown kid {_printable(kid)!r} for issuer {client.issuer!r}")
        if not key.verifies(alg):
            raise Unauthorized(f"key {kid!r} of issuer {client.issuer!r} cannot verify alg {alg}")
        return key

    def _lookup(self, client: TrustedClient, jku: Any, kid: str) -> VerificationKey | None:
        if jku is not None and (not isinstance(jku, str) or jku not in client.jku_allowlist):
            # Refused before any network call: fetching an attacker-chosen URL would be SSRF.
            raise Unauthorized(f"jku {_printable(jku)!r} not on the allowlist of {client.issuer!r}")
        if kid in client.keys:
            return client.keys[kid]  # pinned keys first: no fetch needed (and none possible offline)
        url = jku if jku is not None else client.jwks_url
        return None if url is None else self._fetched(url, kid)

    def _fetched(self, url: str, kid: str) -> VerificationKey | None:
        try:
            return self.jwks.key(url, kid)
        except JwksUnavailable as exc:
            raise Unauthorized(f"keys unavailable: {exc.reason}") from None

    def _decode(
        self, token: str, key: VerificationKey, alg: str, client: TrustedClient, expected_aud: str
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=expected_aud,
                issuer=client.issuer,
                leeway=self.rules.leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"{_reason(exc)} (issuer {client.issuer!r}, kid {key.kid!r})") from None
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise Unauthorized(f"jti must be a string of 1-256 characters (issuer {client.issuer!r})")
        if _seconds(claims, "exp") - _seconds(claims, "iat") > self.rules.max_lifetime_s:
            raise Unauthorized(f"token lifetime exceeds {self.rules.max_lifetime_s} s ({client.issuer!r})")
        return claims


def bearer_token(authorization: str | None) -> str:
    """The compact JWS of an `Authorization: Bearer ...` header (scheme case-insensitive)."""
    if not authorization:
        raise Unauthorized("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization is not a Bearer token")
    if len(token) > MAX_TOKEN_CHARS:  # checked first: nothing longer is ever parsed
        raise Unauthorized(f"Bearer token is longer than {MAX_TOKEN_CHARS} characters")
    if not _COMPACT_JWS.fullmatch(token):
        raise Unauthorized("Bearer token is not a compact JWS")
    return token


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims WITHOUT verification: only used to find the client and its key."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise Unauthorized("malformed JWT") from None
    if not isinstance(claims, dict):
        raise Unauthorized("malformed JWT")
    return header, claims


def _check_tenant(client: TrustedClient, claims: dict[str, Any]) -> str | None:
    tenant = claims.get("tenant")
    if client.tenants is not None and (not isinstance(tenant, str) or tenant not in client.tenants):
        raise Unauthorized(f"tenant {_printable(tenant)!r} not allowed for issuer {client.issuer!r}")
    return tenant if isinstance(tenant, str) else None


def _seconds(claims: dict[str, Any], name: str) -> int:
    """A NumericDate claim as PyJWT read it (it already rejected values int() cannot take)."""
    return int(claims[name])


def _reason(exc: jwt.PyJWTError) -> str:
    return next((reason for kind, reason in _PYJWT_REASONS if isinstance(exc, kind)), "invalid JWT")


def _printable(value: Any) -> str:
    """An attacker-supplied header/claim value, shortened and stripped of control characters for the log."""
    text = str(value)[:120]
    return "".join(ch if ch.isprintable() else "?" for ch in text)
