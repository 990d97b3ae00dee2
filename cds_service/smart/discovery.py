"""SMART discovery: ``GET {iss}/.well-known/smart-configuration`` (SMART App Launch 2.x, section 2.1).

A usable discovery document is kept for ``DISCOVERY_TTL_S`` per FHIR server (:class:`DiscoveryCache`), so
launches do not each cost a request to the EHR; only allowlisted servers are ever looked up, which bounds
the cache. Failures are not cached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import requests
from cachetools import TTLCache

from cds_service.smart.errors import SmartError
from cds_service.smart.settings import SmartSettings, normalize_base

WELL_KNOWN = "/.well-known/smart-configuration"
DISCOVERY_TTL_S = 300.0
DISCOVERY_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class SmartConfiguration:
    """The fields of the discovery document the app relies on."""

    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None
    jwks_uri: str | None
    capabilities: frozenset[str]
    code_challenge_methods: frozenset[str]


def _unavailable(message: str) -> SmartError:
    return SmartError(502, "discovery-failed", "The EHR's authorization server could not be found", message)


def discover(http: requests.Session, iss: str, settings: SmartSettings) -> SmartConfiguration:
    """Fetch and check the discovery document; raises SmartError (502) when unusable."""
    url = f"{normalize_base(iss)}{WELL_KNOWN}"
    try:
        response = http.get(
            url,
            headers={"Accept": "application/json"},
            timeout=settings.http_timeout_s,
            allow_redirects=False,
        )
    except requests.RequestException:
        raise _unavailable("The SMART configuration of the FHIR server could not be retrieved.") from None
    if response.status_code != 200:
        raise _unavailable(f"The SMART configuration request answered HTTP {response.status_code}.")
    try:
        document: Any = response.json()
    except ValueError:
        raise _unavailable("The SMART configuration is not JSON.") from None
    if not isinstance(document, dict):
        raise _unavailable("The SMART configuration is not a JSON object.")
    return _parse(document, settings)


def _parse(document: dict[str, Any], settings: SmartSettings) -> SmartConfiguration:
    endpoints = {}
    for key in ("authorization_endpoint", "token_endpoint"):
        value = document.get(key)
        if not isinstance(value, str) or not settings.endpoint_allowed(value):
            raise _unavailable(f"The SMART configuration has no usable {key}.")
        endpoints[key] = value
    methods = frozenset(_strings(document.get("code_challenge_methods_supported")))
    # SMART 2.x: S256 is mandatory. A server without it cannot protect the code, so the app refuses.
    if "S256" not in methods:
        raise _unavailable("The authorization server does not support PKCE with S256.")
    jwks_uri = document.get("jwks_uri")
    issuer = document.get("issuer")
    return SmartConfiguration(
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        issuer=issuer if isinstance(issuer, str) else None,
        jwks_uri=jwks_uri if isinstance(jwks_uri, str) and settings.endpoint_allowed(jwks_uri) else None,
        capabilities=frozenset(_strings(document.get("capabilities"))),
        code_challenge_methods=methods,
    )


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class DiscoveryCache:
    """Usable discovery documents per FHIR base URL, for DISCOVERY_TTL_S (thread-safe; per process)."""

    def __init__(self, ttl_s: float = DISCOVERY_TTL_S, size: int = DISCOVERY_CACHE_SIZE) -> None:
        self._documents: TTLCache[str, SmartConfiguration] = TTLCache(maxsize=size, ttl=ttl_s)
        self._lock = threading.Lock()

    def get(self, http: requests.Session, iss: str, settings: SmartSettings) -> SmartConfiguration:
        key = normalize_base(iss)
        with self._lock:
            found = self._documents.get(key)
        if found is None:
            found = discover(http, iss, settings)  # raises SmartError: nothing cached
            with self._lock:
                self._documents[key] = found
        return found
