"""Client authentication: trusted clients, JWKS cache, jti replay store and JWT verification.

`auth_defaults(settings, engine)` gives the app.config defaults create_app installs:

* trusted clients configured (CDS_TRUSTED_CLIENTS_FILE or CDS_TRUSTED_CLIENTS) -> CLIENT_AUTH is
  JwtClientAuth and FHIR_SERVER_POLICY is the client's own allowlist -- in development mode too (then only
  http on loopback is additionally allowed for JWKS and FHIR URLs);
* none configured, development mode -> {} (the app keeps allow_all: auth OFF, announced at start);
* none configured, outside development -> ConfigurationError when `required` (a server started from the
  environment refuses to run), else {} (the app keeps deny_all: every call 401, fail closed).
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import Engine

from cds_service.auth.clients import FILE_VARIABLE, ClientRegistry, TrustedClient, load_trusted_clients
from cds_service.auth.jwks import JwksCache
from cds_service.auth.replay import ReplayStore
from cds_service.auth.verify import JwtClientAuth, JwtRules
from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.web.security import ClientFhirServerPolicy

__all__ = [
    "ClientRegistry",
    "JwtClientAuth",
    "JwtRules",
    "TrustedClient",
    "auth_defaults",
    "check_trust_configuration",
    "load_trusted_clients",
]

MISSING_CLIENTS = (
    "no trusted CDS clients configured: outside development mode every call must carry a client JWT, "
    "so set CDS_TRUSTED_CLIENTS_FILE (see docs/trusted-clients.md and config/trusted-clients.example.json), "
    "or run `cds-service serve --dev` for local trials"
)


def check_trust_configuration(settings: Settings) -> ClientRegistry | None:
    """Load and validate the trusted clients; outside development mode they are required."""
    registry = load_trusted_clients(settings)
    if registry is None and not settings.dev_mode:
        raise ConfigurationError(FILE_VARIABLE, MISSING_CLIENTS)
    return registry


def auth_defaults(
    settings: Settings,
    engine: Engine,
    *,
    required: bool,
    jwks_session: requests.Session | None = None,
) -> dict[str, Any]:
    """CLIENT_AUTH / FHIR_SERVER_POLICY (and the JWKS cache) for the app config; see the module doc."""
    registry = check_trust_configuration(settings) if required else load_trusted_clients(settings)
    if registry is None:
        return {}
    jwks = JwksCache(
        jwks_session or new_jwks_session(),
        ttl_s=settings.jwks_cache_ttl_s,
        min_refresh_s=settings.jwks_min_refresh_s,
        timeout_s=settings.jwks_timeout_s,
        dev_mode=settings.dev_mode,
    )
    rules = JwtRules(settings.jwt_leeway_s, settings.jwt_max_lifetime_s)
    return {
        "CLIENT_AUTH": JwtClientAuth(registry, jwks, ReplayStore(engine), rules),
        "FHIR_SERVER_POLICY": ClientFhirServerPolicy(settings.dev_mode),
    }


def new_jwks_session() -> requests.Session:
    """JWKS fetches: no proxies or .netrc from the environment, no retries."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
