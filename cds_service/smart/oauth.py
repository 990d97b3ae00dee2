"""The OAuth 2.0 side of SMART App Launch: authorization request with PKCE S256, code exchange, checks.

Authlib's ``OAuth2Session`` builds the authorization URL (``code_challenge`` from our verifier, method S256)
and performs the token request (``code_verifier``, public client: ``client_id`` in the body). What SMART adds
is handled here: ``launch`` and ``aud`` on the request; granted scopes checked for read access in v2
(``.rs``) or v1 (``.read``) syntax; launch context (``patient``, ``need_patient_banner``, ``appContext``)
taken from the token response; the OpenID ``id_token`` verified against the server's JWKS.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
import requests
from authlib.integrations.base_client.errors import OAuthError  # type: ignore[import-untyped]
from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]

from cds_service.smart.appcontext import parse_app_context
from cds_service.smart.discovery import SmartConfiguration
from cds_service.smart.errors import SmartError
from cds_service.smart.sessions import LaunchContext, LaunchKind, PendingAuthorization
from cds_service.smart.settings import SmartSettings, normalize_base

# What the dashboard reads: Patient by id (r); the other types by search (s).
REQUIRED_ACCESS = {
    "Patient": "r",
    "Observation": "rs",
    "Condition": "rs",
    "Procedure": "rs",
    "MedicationAdministration": "rs",
}
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]


def _client(settings: SmartSettings, redirect_uri: str, scope: str | None = None) -> OAuth2Session:
    session = OAuth2Session(
        settings.client_id,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",  # public client: client_id in the body, no secret
    )
    session.trust_env = False  # no proxy variables or .netrc credentials from the environment
    return session


def authorization_request(
    config: SmartConfiguration,
    settings: SmartSettings,
    *,
    iss: str,
    redirect_uri: str,
    kind: LaunchKind,
    launch: str | None = None,
) -> tuple[str, PendingAuthorization]:
    """The authorization URL to send the browser to, and what the callback needs to finish."""
    verifier = secrets.token_urlsafe(64)  # 86 characters, within PKCE's 43-128
    state = secrets.token_urlsafe(32)  # 256 bits (SMART asks for at least 122)
    scope = settings.scopes if kind == "ehr" else settings.standalone_scopes
    extra = {"aud": normalize_base(iss)}
    if launch is not None:
        extra["launch"] = launch
    with _client(settings, redirect_uri, scope) as client:
        url, _ = client.create_authorization_url(
            config.authorization_endpoint, state=state, code_verifier=verifier, **extra
        )
    pending = PendingAuthorization(
        state=state,
        code_verifier=verifier,
        iss=normalize_base(iss),
        token_endpoint=config.token_endpoint,
        issuer=config.issuer,
        jwks_uri=config.jwks_uri,
        kind=kind,
    )
    return str(url), pending


def exchange_code(
    pending: PendingAuthorization, code: str, settings: SmartSettings, redirect_uri: str
) -> dict[str, Any]:
    """POST the code and PKCE verifier to the token endpoint; raises SmartError on any failure."""
    with _client(settings, redirect_uri) as client:
        try:
            token = client.fetch_token(
                pending.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=pending.code_verifier,
                timeout=settings.http_timeout_s,
            )
        except OAuthError as exc:
            raise SmartError(
                400,
                "token-request-failed",
                "Authorization could not be completed",
                f"The authorization server refused the token request ({exc.error or 'error'}).",
            ) from None
        except (requests.RequestException, ValueError):
            raise SmartError(
                502,
                "token-request-failed",
                "Authorization could not be completed",
                "The authorization server's token endpoint did not answer as expected.",
            ) from None
    return dict(token)


def parse_scopes(granted: str | None) -> frozenset[str]:
    return frozenset((granted or "").split())


def _permissions(scopes: Iterable[str], resource_type: str) -> set[str]:
    """Letters of c/r/u/d/s granted on `resource_type` in patient or user context (v1 and v2)."""
    letters: set[str] = set()
    for scope in scopes:
        context, _, rest = scope.partition("/")
        if context not in {"patient", "user"} or "." not in rest:
            continue
        rtype, _, permission = rest.partition(".")
        permission = permission.split("?", 1)[0]  # v2 constraints (?category=...) still grant the type
        if rtype not in {resource_type, "*"}:
            continue
        if permission in {"read", "*"}:  # v1: .read = .rs, .* = .cruds
            letters |= {"r", "s"} | ({"c", "u", "d"} if permission == "*" else set())
        elif permission and set(permission) <= set("cruds"):
            letters |= set(permission)
    return letters


def missing_access(scopes: Iterable[str]) -> list[str]:
    """Resource types the granted scopes do not let the dashboard read, e.g. ``["Observation.rs"]``."""
    granted = list(scopes)
    return [
        f"{rtype}.{needed}"
        for rtype, needed in REQUIRED_ACCESS.items()
        if not set(needed) <= _permissions(granted, rtype)
    ]


def verify_id_token(
    id_token: str, pending: PendingAuthorization, settings: SmartSettings, http: requests.Session
) -> dict[str, Any]:
    """Verify signature (keys from jwks_uri), issuer, audience and expiry; return the claims.

    Without jwks_uri/issuer in the discovery document nothing can be verified: the claims are then empty
    (the token only feeds the "signed in as" line); a token that fails verification stops the launch.
    """
    if pending.jwks_uri is None or pending.issuer is None:
        return {}
    invalid = SmartError(
        401, "id-token-invalid", "Sign-in could not be verified", "The identity token is invalid."
    )
    try:
        response = http.get(pending.jwks_uri, timeout=settings.http_timeout_s, allow_redirects=False)
        response.raise_for_status()
        keys = jwt.PyJWKSet.from_dict(response.json())
        kid = jwt.get_unverified_header(id_token).get("kid")
        key = next((k for k in keys.keys if kid is None or k.key_id == kid), None)
        if key is None:
            raise invalid
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key.key,
            algorithms=ID_TOKEN_ALGORITHMS,
            audience=settings.client_id,
            issuer=pending.issuer,
            leeway=60,
        )
    except (requests.RequestException, ValueError, jwt.PyJWTError):
        raise invalid from None
    return claims


def launch_context(
    token: Mapping[str, Any], pending: PendingAuthorization, fhir_user: str | None
) -> LaunchContext:
    """The session's view of a token response (the raw response is not kept)."""
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or str(token.get("token_type", "")).lower() != "bearer":
        raise SmartError(
            502, "token-invalid", "Authorization could not be completed", "No bearer access token was issued."
        )
    expires_in = token.get("expires_in")
    patient = token.get("patient")
    banner = token.get("need_patient_banner")
    return LaunchContext(
        iss=pending.iss,
        access_token=access_token,
        expires_at=time.time() + float(expires_in) if isinstance(expires_in, int | float) else None,
        scopes=parse_scopes(token.get("scope")),
        patient=patient if isinstance(patient, str) and patient else None,
        kind=pending.kind,
        need_patient_banner=banner is not False,  # SMART: show the banner unless told otherwise
        patient_locked=isinstance(patient, str) and bool(patient),
        encounter=token.get("encounter") if isinstance(token.get("encounter"), str) else None,
        app_context=parse_app_context(token.get("appContext")),
        fhir_user=fhir_user,
    )
