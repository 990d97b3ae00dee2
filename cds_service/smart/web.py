"""Request plumbing of the SMART blueprint: per-app state, the session cookie, headers, HTML error pages."""

from __future__ import annotations

import logging
import secrets
import traceback
from dataclasses import dataclass, field

import requests
from flask import Flask, Response, current_app, g, render_template, request
from werkzeug.exceptions import HTTPException

from cds_service.smart.discovery import DiscoveryCache
from cds_service.smart.errors import RELAUNCH_HINT, SmartError, session_missing, token_expired
from cds_service.smart.sessions import COOKIE_NAME, COOKIE_PATH, LaunchContext, SessionStore, SmartSession
from cds_service.smart.settings import SmartSettings

EXTENSION_KEY = "cds_smart"
log = logging.getLogger("cds_service.smart")
# No scripts at all; styles and images only from this origin; forms post only here. Inline SVG is markup,
# not a resource, so it needs no exception.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'"
)
# The standalone start form leads (through our redirect) to the EHR's authorization server, and browsers
# apply form-action to redirects: that one page cannot restrict form targets to this origin.
START_PAGE_POLICY = "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'"


@dataclass(frozen=True, slots=True)
class SmartState:
    """Built once per app when the blueprint is registered."""

    settings: SmartSettings
    store: SessionStore
    discovery: DiscoveryCache = field(default_factory=DiscoveryCache)


def smart_state(app: Flask | None = None) -> SmartState:
    state = (app or current_app).extensions[EXTENSION_KEY]
    assert isinstance(state, SmartState)
    return state


def http() -> requests.Session:
    """The app's pooled session (trust_env off) for discovery, JWKS and FHIR calls."""
    session = current_app.config["HTTP_SESSION"]
    assert isinstance(session, requests.Session)
    return session


def current_session() -> SmartSession | None:
    """The session named by the cookie, if it still exists (the read restarts its idle timeout)."""
    session_id = request.cookies.get(COOKIE_NAME)
    return smart_state().store.get(session_id) if session_id else None


def session_for_write() -> SmartSession:
    """The current session, or a new one whose cookie is set on the response."""
    session = current_session()
    if session is None:
        session = smart_state().store.create()
        issue_cookie(session)
    return session


def issue_cookie(session: SmartSession) -> None:
    g.smart_cookie = session.id


def require_context() -> tuple[SmartSession, LaunchContext]:
    """The signed-in session and its unexpired launch context (else the no-session or expired page)."""
    session = current_session()
    if session is None or session.context is None:
        raise session_missing()
    if session.context.expired():
        raise token_expired()
    return session, session.context


def check_csrf(session: SmartSession) -> None:
    token = request.form.get("csrf", "")
    if not secrets.compare_digest(token.encode(), session.csrf.encode()):
        raise SmartError(
            400, "csrf", "The form has expired", "Reload the page and try again.", relaunch=False
        )


def after_request(response: Response) -> Response:
    """Cookie and security headers on every /smart response (pages hold PHI: never cached)."""
    cookie = g.pop("smart_cookie", None)
    settings = smart_state().settings
    if cookie is not None:
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            httponly=True,
            samesite="Lax",
            secure=settings.secure_cookies,
            path=COOKIE_PATH,
        )
    if g.pop("smart_clear_cookie", False):
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
    if request.endpoint != "smart.static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"  # the callback URL carries the code
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = g.pop("smart_csp", CONTENT_SECURITY_POLICY)
    return response


def error_page(error: SmartError) -> tuple[str, int]:
    log.info("smart error page", extra={"event": "smart-error", "code": error.code, "status": error.status})
    page = render_template("smart/error.html", error=error, relaunch_hint=RELAUNCH_HINT)
    return page, error.status


def http_error_page(error: HTTPException) -> tuple[str, int, dict[str, str]]:
    status = error.code or 500
    page, status = error_page(
        SmartError(status, f"http-{status}", error.name, "The request cannot be served.", relaunch=False)
    )
    kept = {name: value for name, value in error.get_headers() if name in ("Retry-After", "Allow")}
    return page, status, kept


def unexpected_error_page(error: Exception) -> tuple[str, int]:
    # Like the service's JSON handler: type and frames only, since messages may quote patient data.
    frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(error.__traceback__)]
    log.error("unhandled exception", extra={"error_type": type(error).__name__, "frames": frames[-15:]})
    return error_page(
        SmartError(
            500, "internal", "Something went wrong", "The dashboard could not be shown.", relaunch=True
        )
    )
