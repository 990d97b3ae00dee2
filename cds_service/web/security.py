"""Extension points for trust decisions, with safe defaults.

* ``app.config["CLIENT_AUTH"]``: ``ClientAuthenticator`` -- called as ``auth(request, expected_aud)`` before
  discovery, hook and feedback calls (never for CORS preflights). Returns the client's ``ClientIdentity`` or
  raises ``Unauthorized`` (401, no detail sent). ``expected_aud`` is the exact endpoint URL built from
  CDS_PUBLIC_BASE_URL. Default: JWT verification against the trusted clients (cds_service.auth) when they
  are configured; otherwise ``allow_all`` in development mode and ``deny_all`` outside it (fail closed).
* ``app.config["FHIR_SERVER_POLICY"]``: ``FhirServerPolicy`` -- ``policy(url) -> bool``: may the service call
  this fhirServer with the client's token? With trusted clients: ``ClientFhirServerPolicy`` (the
  authenticated client's own allowlist, https only outside development). Without: ``dev_fhir_server_policy``
  (https anywhere, http on loopback) in development, ``https_only_policy`` otherwise.

URLs with credentials (``https://user:pw@host``), a query or a fragment are never acceptable FHIR bases.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from flask import Request, g, has_app_context

from cds_service.errors import Unauthorized

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who called: safe to log (issuer, tenant, jti; never the JWT itself).

    `fhir_servers` are the normalized FHIR base URLs this client may send the service to (its allowlist).
    """

    issuer: str
    tenant: str | None = None
    jti: str | None = None
    authenticated: bool = True
    fhir_servers: frozenset[str] = frozenset()


class ClientAuthenticator(Protocol):
    def __call__(self, request: Request, expected_aud: str) -> ClientIdentity: ...


class FhirServerPolicy(Protocol):
    def __call__(self, url: str) -> bool: ...


DEV_IDENTITY = ClientIdentity(issuer="development-mode", authenticated=False)


def allow_all(request: Request, expected_aud: str) -> ClientIdentity:
    """Development only: every caller is accepted, unauthenticated."""
    return DEV_IDENTITY


def deny_all(request: Request, expected_aud: str) -> ClientIdentity:
    """Fail closed: refuse every call (production without trusted clients, when built for tests)."""
    raise Unauthorized("client authentication is not configured (no trusted clients)")


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain_base(url: str) -> bool:
    """An absolute URL with a host and no credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return bool(parts.hostname) and not (parts.username or parts.password or parts.query or parts.fragment)


def https_only_policy(url: str) -> bool:
    """Production: only https fhirServers (CDS Hooks: fhirServer MUST be https for production data)."""
    return urlsplit(url).scheme == "https" and _plain_base(url)


def dev_fhir_server_policy(url: str) -> bool:
    """Development: https anywhere, plus plain http on loopback (local test servers, the sandbox)."""
    if https_only_policy(url):
        return True
    parts = urlsplit(url)
    return (
        parts.scheme == "http"
        and _plain_base(url)
        and parts.hostname is not None
        and is_loopback_host(parts.hostname)
    )


def transport_allowed(url: str, dev_mode: bool) -> bool:
    """https; in development also http on loopback. Used for FHIR servers and JWKS URLs alike."""
    return dev_fhir_server_policy(url) if dev_mode else https_only_policy(url)


def normalize_base_url(url: str) -> str | None:
    """Canonical form for allowlist comparison: lower-case scheme and host, no default port, no trailing
    slash. None for anything that is not a plain http(s) base URL."""
    if not _plain_base(url):
        return None
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or parts.hostname is None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS[parts.scheme]) else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


class ClientFhirServerPolicy:
    """Only the authenticated client's own FHIR servers (exact base URL match after normalization), https
    only outside development. The identity comes from ``flask.g.client`` (set by the auth hook)."""

    def __init__(self, dev_mode: bool) -> None:
        self.dev_mode = dev_mode

    def __call__(self, url: str) -> bool:
        identity = g.get("client") if has_app_context() else None
        if not isinstance(identity, ClientIdentity) or not identity.authenticated:
            return False
        normalized = normalize_base_url(url)
        return (
            normalized is not None
            and transport_allowed(url, self.dev_mode)
            and normalized in identity.fhir_servers
        )
