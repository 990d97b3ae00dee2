"""Settings of the SMART dashboard, validated once when the blueprint is registered.

Each value comes from ``app.config["SMART_<NAME>"]`` (tests, embedding apps) or else the environment variable
``CDS_SMART_<NAME>``; development mode and the public base URL come from the service's own Settings.

==============================  ==========================================================================
CDS_SMART_CLIENT_ID             OAuth client id registered with the EHR (public client). Default
                                ``smart-app``.
CDS_SMART_ISS_ALLOWLIST         Comma-separated FHIR base URLs the app may be launched against (exact match,
                                trailing slash ignored; https outside development). In development mode
                                any http(s) FHIR server on loopback is allowed as well.
CDS_SMART_SCOPES                Scopes of an EHR launch (default: see ``EHR_SCOPES``). A standalone launch
                                replaces ``launch`` with ``launch/patient``.
CDS_SMART_SESSION_TTL_S         Idle lifetime of a server-side session (default 3600).
CDS_SMART_SESSION_MAX_AGE_S     Absolute lifetime of a session after sign-in, whatever the token's own
                                expiry (default 43200, 12 hours).
CDS_SMART_SESSION_KEY           Fernet key(s) encrypting the stored sessions (cds_service.smart.sessionkey;
                                required in production, generated at start in development). Not part of
                                :class:`SmartSettings`, so it is never printed with them.
CDS_SMART_MAX_SESSIONS          Only for the in-memory store (``MemorySessionStore``): sessions kept per
                                process (default 10000; the oldest go first).
CDS_SMART_HTTP_TIMEOUT_S        Timeout of one discovery, token, JWKS or FHIR call (default 10).
CDS_SMART_FHIR_MAX_PAGES        Bundle pages followed per FHIR search (default 20).
CDS_SMART_FETCH_BUDGET_S        Time budget of all FHIR reads behind one dashboard view (default 30).
==============================  ==========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.web.security import dev_fhir_server_policy, https_only_policy, is_loopback_host

T = TypeVar("T")
EHR_SCOPES = (
    "launch openid fhirUser patient/Patient.rs patient/Observation.rs patient/Condition.rs "
    "patient/Procedure.rs patient/MedicationAdministration.rs"
)
CALLBACK_PATH = "/smart/callback"


def normalize_base(url: str) -> str:
    """A FHIR base URL without trailing slash (how `iss` values are compared)."""
    return url.strip().rstrip("/")


@dataclass(frozen=True, slots=True)
class SmartSettings:
    """The dashboard's configuration (see the module docstring for each variable)."""

    dev_mode: bool
    public_base_url: str | None
    client_id: str = "smart-app"
    iss_allowlist: tuple[str, ...] = ()
    scopes: str = EHR_SCOPES
    session_ttl_s: int = 3600
    session_max_age_s: int = 43200
    max_sessions: int = 10000
    http_timeout_s: float = 10.0
    fhir_max_pages: int = 20
    fetch_budget_s: float = 30.0

    @classmethod
    def load(
        cls, config: Mapping[str, Any], core: Settings, environ: Mapping[str, str] | None = None
    ) -> SmartSettings:
        """Read and validate; raises ConfigurationError naming the first bad variable."""
        env = os.environ if environ is None else environ

        def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
            raw = config.get(f"SMART_{name}", env.get(f"CDS_SMART_{name}"))
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                return default
            text = ",".join(raw) if isinstance(raw, list | tuple) else str(raw).strip()
            return parse(f"CDS_SMART_{name}", text)

        settings = cls(
            dev_mode=core.dev_mode,
            public_base_url=core.public_base_url,
            client_id=get("CLIENT_ID", _token, "smart-app"),
            iss_allowlist=get("ISS_ALLOWLIST", _url_list, ()),
            scopes=get("SCOPES", _scopes, EHR_SCOPES),
            session_ttl_s=get("SESSION_TTL_S", _positive(int, 7 * 86400), 3600),
            session_max_age_s=get("SESSION_MAX_AGE_S", _positive(int, 30 * 86400), 43200),
            max_sessions=get("MAX_SESSIONS", _positive(int, 10**7), 10000),
            http_timeout_s=get("HTTP_TIMEOUT_S", _positive(float, 300.0), 10.0),
            fhir_max_pages=get("FHIR_MAX_PAGES", _positive(int, 1000), 20),
            fetch_budget_s=get("FETCH_BUDGET_S", _positive(float, 600.0), 30.0),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Outside development every allowlisted FHIR server must be https."""
        for url in self.iss_allowlist:
            if not self.dev_mode and not https_only_policy(url):
                raise ConfigurationError(
                    "CDS_SMART_ISS_ALLOWLIST", f"{url!r} must be https outside development"
                )

    def iss_allowed(self, iss: str) -> bool:
        """Is `iss` on the allowlist (or, in development mode only, an http(s) server on loopback)?"""
        parts = urlsplit(iss)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
            return False
        if normalize_base(iss) in self.iss_allowlist:
            return True
        # Development adds local test servers only: any other server must be allowlisted explicitly.
        return self.dev_mode and parts.hostname is not None and is_loopback_host(parts.hostname)

    def endpoint_allowed(self, url: str) -> bool:
        """Authorization/token/JWKS endpoints: https, or http on loopback in development mode."""
        return (dev_fhir_server_policy if self.dev_mode else https_only_policy)(url)

    def redirect_uri(self, request_host_url: str) -> str:
        """{public base}/smart/callback; the request's own host only in development without a base URL."""
        base = self.public_base_url or normalize_base(request_host_url)
        return f"{base}{CALLBACK_PATH}"

    @property
    def standalone_scopes(self) -> str:
        """Standalone launch: no EHR launch context, so ask for a patient to be selected."""
        return " ".join("launch/patient" if s == "launch" else s for s in self.scopes.split())

    @property
    def secure_cookies(self) -> bool:
        return bool(self.public_base_url and self.public_base_url.startswith("https://"))


def _token(name: str, raw: str) -> str:
    if any(c.isspace() for c in raw):
        raise ConfigurationError(name, "must not contain whitespace")
    return raw


def _scopes(name: str, raw: str) -> str:
    scopes = raw.split()
    if "launch" not in scopes:
        raise ConfigurationError(name, "an EHR launch needs the 'launch' scope")
    return " ".join(scopes)


def _url_list(name: str, raw: str) -> tuple[str, ...]:
    urls = tuple(normalize_base(u) for u in raw.split(",") if u.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(name, f"expected absolute http(s) FHIR base URLs, got {url!r}")
    return urls


def _positive(kind: Callable[[str], T], maximum: float) -> Callable[[str, str], T]:
    def parse(name: str, raw: str) -> T:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigurationError(name, f"expected a {kind.__name__}, got {raw!r}") from None
        if not 0 < float(value) <= maximum:  # type: ignore[arg-type]
            raise ConfigurationError(name, f"must be > 0 and <= {maximum:g}, got {raw!r}")
        return value

    return parse
