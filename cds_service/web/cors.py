"""CORS for browser-based CDS clients (the CDS Hooks Sandbox, web EHRs), without flask-cors.

Browsers send an OPTIONS preflight before every discovery, hook and feedback call (they carry
`Authorization`), so preflights are answered by Flask's automatic OPTIONS handling and never reach client
authentication. Allowed origins come from CDS_CORS_ORIGINS: `*` in development by default, an explicit
allowlist otherwise. No cookies are used, so `Access-Control-Allow-Credentials` is never sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id"
EXPOSE_HEADERS = "X-Request-Id"
MAX_AGE_S = "600"
CORS_PATH_PREFIX = "/cds-services"


def allowed_origin(origin: str | None, allowlist: Iterable[str]) -> str | None:
    """The Access-Control-Allow-Origin value for `origin`, or None when it is not allowed."""
    allowed = tuple(allowlist)
    if "*" in allowed:
        return "*"
    if origin and origin.rstrip("/") in allowed:
        return origin
    return None


def init_app(app: Flask, allowlist: Iterable[str]) -> None:
    """Add CORS headers to every response under /cds-services (including errors and preflights)."""
    origins = tuple(allowlist)

    @app.after_request
    def add_cors_headers(response: Response) -> Response:
        if not request.path.startswith(CORS_PATH_PREFIX):
            return response
        response.vary.add("Origin")
        value = allowed_origin(request.headers.get("Origin"), origins)
        if value is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = value
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE_S
        return response
