"""Extension points for trust decisions, with safe defaults.

* ``app.config["CLIENT_AUTH"]``: ``ClientAuthenticator`` -- called as ``auth(request, expected_aud)`` before
  discovery, hook and feedback calls (never for CORS preflights). Returns the client's ``ClientIdentity`` or
  raises ``Unauthorized`` (401, no detail sent). ``expected_aud`` is the exact endpoint URL built from
  CDS_PUBLIC_BASE_URL. Default: ``allow_all`` in development mode, ``deny_all`` otherwise (fail closed until
  JWT verification is configured).
* ``app.config["FHIR_SERVER_POLICY"]``: ``FhirServerPolicy`` -- ``policy(url) -> bool``: may the service call
  this fhirServer with the client's token? Default: ``dev_fhir_server_policy`` (https anywhere, http on
  loopback) in development, ``https_only_policy`` otherwise.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from flask import Request

from cds_service.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who called: safe to log (issuer, tenant, jti; never the JWT itself)."""

    issuer: str
    tenant: str | None = None
    jti: str | None = None
    authenticated: bool = True


class ClientAuthenticator(Protocol):
    def __call__(self, request: Request, expected_aud: str) -> ClientIdentity: ...


class FhirServerPolicy(Protocol):
    def __call__(self, url: str) -> bool: ...


DEV_IDENTITY = ClientIdentity(issuer="development-mode", authenticated=False)


def allow_all(request: Request, expected_aud: str) -> ClientIdentity:
    """Development only: every caller is accepted, unauthenticated."""
    return DEV_IDENTITY


def deny_all(request: Request, expected_aud: str) -> ClientIdentity:
    """Production default until client JWT verification is plugged in: refuse every call."""
    raise Unauthorized("client authentication is not configured (set app.config['CLIENT_AUTH'])")


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def https_only_policy(url: str) -> bool:
    """Production: only https fhirServers (CDS Hooks: fhirServer MUST be https for production data)."""
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def dev_fhir_server_policy(url: str) -> bool:
    """Development: https anywhere, plus plain http on loopback (local test servers, the sandbox)."""
    parts = urlsplit(url)
    if https_only_policy(url):
        return True
    return parts.scheme == "http" and parts.hostname is not None and is_loopback_host(parts.hostname)
