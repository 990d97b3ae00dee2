"""OpenAPI path items of the SMART on FHIR dashboard (cds_service.smart; docs/smart-dashboard.md).

Documented for integrators; not fuzzed by schemathesis, since every route needs a live SMART launch.
Keep in step with cds_service/smart/views.py: tests/test_openapi.py fails when they differ.
"""

from __future__ import annotations

from typing import Any

from cds_service.ops.openapi_components import html_page, text_response


def smart_paths() -> dict[str, Any]:
    """The SMART on FHIR dashboard (documented for integrators; not fuzzed: it needs a live launch)."""
    redirect = {"description": "Redirect (authorization server, dashboard or picker)"}
    error_page = text_response("text/html", "Error page (launch, session or authorization problem)")
    throttled = text_response("text/html", "Too many launches from this client (CDS_RATE_LIMIT)")
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
        for name, text in (("iss", "The EHR's FHIR base URL"), ("launch", "The EHR's launch id"))
    ]
    return {
        "/smart/launch": {
            "get": {
                "tags": ["smart"],
                "summary": "EHR launch: check iss, discover the authorization server, redirect to authorize",
                "parameters": query,
                "responses": {"302": redirect, "400": error_page, "429": throttled, "502": error_page},
            }
        },
        "/smart/standalone": {
            "get": html_page(
                "Standalone launch (a form asking for the FHIR server without iss)",
                "With iss: redirect to the authorization server.",
                "smart",
                parameters=query[:1],
            )
            | {
                "responses": {
                    "200": text_response("text/html", "The form"),
                    "302": redirect,
                    "400": error_page,
                    "429": throttled,
                    "502": error_page,
                }
            }
        },
        "/smart/callback": {
            "get": {
                "tags": ["smart"],
                "summary": "OAuth redirect URI: exchange the code, then go to the dashboard or the picker",
                "responses": {"303": redirect, "400": error_page, "401": error_page},
            }
        },
        "/smart/picker": {
            "get": html_page("Patient picker", "When the token carries no patient.", "smart"),
            "post": html_page("Choose the patient", "Form post (CSRF token).", "smart")
            | {"responses": {"303": redirect, "400": error_page, "401": error_page}},
        },
        "/smart/dashboard": {
            "get": html_page("The IEC-HS dashboard of the launched patient", "Charts and scores.", "smart"),
            "post": html_page("Set the evaluation instant", "Form post (CSRF token).", "smart")
            | {"responses": {"303": redirect, "400": error_page, "401": error_page}},
        },
        "/smart/logout": {
            "post": html_page("End the SMART session", "Tokens are dropped.", "smart"),
        },
        "/smart/static/{filename}": {
            "get": {
                "tags": ["smart"],
                "summary": "Static files of the dashboard",
                "parameters": [
                    {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "The file"}, "404": error_page},
            }
        },
    }
