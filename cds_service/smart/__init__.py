"""SMART on FHIR dashboard for IEC-HS (SMART App Launch 2.x), served under /smart.

Register ``bp`` on the app (``cds_service.web.app.BLUEPRINTS``). Modules: settings, sessions (session data,
store protocol, expiry rules), dbstore (the default store, on the service's database), codec and sessionkey
(encrypted payloads, CDS_SMART_SESSION_KEY), memstore (in-memory store), discovery, oauth (authlib: PKCE
S256, token exchange, scope and id_token checks), appcontext, fhirdata (FHIR reads with the access token),
dashboard (view model), views (routes), web (cookie, headers, error pages), charts (server-side SVG).
See docs/smart-dashboard.md.
"""

from __future__ import annotations

from cds_service.smart.views import bp

__all__ = ["bp"]
