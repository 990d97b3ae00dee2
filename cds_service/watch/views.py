"""Routes of the watch list (blueprint ``watch``).

==================================  ==========================================================================
GET  /smart/worklist                the worklist page: behind the dashboard's SMART sign-in (its cookie is
                                    scoped to /smart), open in development mode
GET  /smart/worklist/open/<entry>   open a watched patient's dashboard (the URL names the watch entry, never
                                    the patient); without a sign-in on that server, a standalone launch first
GET  /watch/                        redirects to the worklist
GET  /watch/api/patients            the watched patients as JSON (client JWT, as the CDS Hooks endpoints)
POST /watch/api/enroll              enrol ``{"patientId", "fhirServer"[, "infusionTime"]}``
POST /watch/api/unenroll            stop watching ``{"patientId", "fhirServer"}``
POST /watch/notify/<token>          rest-hook Subscription notifications (the Subscription's bearer secret)
==================================  ==========================================================================

The API's callers authenticate like CDS clients (CLIENT_AUTH: a JWT whose ``aud`` is the exact endpoint URL;
open in development mode without trusted clients) and see and enrol patients only on FHIR servers that are
both on their own allowlist and watched.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from cds_service.errors import Forbidden, InvalidRequest, NotFound
from cds_service.hooks.feedback import normalize_timestamp
from cds_service.hooks.request import parse_json_body
from cds_service.smart.appcontext import AppContext
from cds_service.smart.errors import SmartError
from cds_service.smart.web import (
    CONTENT_SECURITY_POLICY,
    START_PAGE_POLICY,
    current_session,
    error_page,
    smart_state,
)
from cds_service.watch import WatchState, watch_state
from cds_service.watch.metrics import SUBSCRIPTION_NOTIFICATIONS
from cds_service.watch.notify import iso
from cds_service.watch.sparkline import sparkline
from cds_service.watch.store import WatchEntry
from cds_service.watch.subscriptions import notification_kind, secret_matches
from cds_service.watch.watcher import describe, rank
from cds_service.web.security import ClientIdentity, normalize_base_url
from cds_service.web.state import get_state

bp = Blueprint(
    "watch", __name__, template_folder="templates", static_folder="static", static_url_path="/watch/static"
)
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
REFRESH_S = 60  # the page reloads itself (a meta refresh: the CSP allows no script)
MAX_NOTIFICATION_BYTES = 1024 * 1024
WORKLIST_PATH = "/smart/worklist"


bp.register_error_handler(SmartError, error_page)


def _state() -> WatchState:
    state = watch_state()
    if state is None:  # the blueprint is registered only with the watch list on
        raise NotFound("the watch list is off")
    return state


@bp.after_request
def _headers(response: Response) -> Response:
    """The worklist shows patient data: never cached; the same CSP as the dashboard (no script at all)."""
    if request.endpoint != "watch.static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = g.pop("watch_csp", CONTENT_SECURITY_POLICY)
    return response


# ---------------------------------------------------------------------- the JSON API


def _caller() -> ClientIdentity:
    """Authenticate the API call as the CDS Hooks endpoints do (aud = this exact endpoint URL)."""
    base = get_state().settings.public_base_url or request.url_root.rstrip("/")
    identity: ClientIdentity = current_app.config["CLIENT_AUTH"](request, base + request.path)
    g.client = identity
    return identity


def _visible_servers(state: WatchState, identity: ClientIdentity) -> set[str]:
    """Watched servers this caller may see: its own allowlist (development mode without clients: all)."""
    watched = {server.base for server in state.servers}
    return watched if not identity.authenticated else watched & set(identity.fhir_servers)


@bp.get("/watch/api/patients")
def api_patients() -> Response:
    state = _state()
    servers = _visible_servers(state, _caller())
    entries = sorted(state.store.active(servers), key=urgency)
    return jsonify({"patients": [describe(entry) for entry in entries]})


def _target(state: WatchState, identity: ClientIdentity, document: Any) -> tuple[str, str]:
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    patient_id, server = document.get("patientId"), document.get("fhirServer")
    if not isinstance(patient_id, str) or FHIR_ID.fullmatch(patient_id) is None:
        raise InvalidRequest("patientId: a FHIR id is required", expression="patientId")
    if not isinstance(server, str):
        raise InvalidRequest("fhirServer: a FHIR base URL is required", expression="fhirServer")
    found = state.servers.find(server)
    if found is None or found.base not in _visible_servers(state, identity):
        raise Forbidden(
            "fhirServer is not a watched FHIR server on this client's allowlist", expression="fhirServer"
        )
    return found.base, patient_id


@bp.post("/watch/api/enroll")
def api_enroll() -> Response:
    state = _state()
    identity = _caller()
    document = parse_json_body(request.get_data(cache=False), request.mimetype)
    server, patient_id = _target(state, identity, document)
    infusion = _infusion(document.get("infusionTime"))
    entry, created = state.enrol(server, patient_id, infusion_at=infusion, source="api")
    response = jsonify(describe(entry) | {"enrolled": created})
    response.status_code = 201 if created else 200
    return response


@bp.post("/watch/api/unenroll")
def api_unenroll() -> Response:
    state = _state()
    identity = _caller()
    document = parse_json_body(request.get_data(cache=False), request.mimetype)
    server, patient_id = _target(state, identity, document)
    entry = state.store.find(server, patient_id)
    if entry is None or not entry.active:
        raise NotFound("this patient is not on the watch list")
    state.watcher.unenrol(entry, "request")
    return jsonify({"patientId": patient_id, "fhirServer": server, "left": True})


def _infusion(value: Any) -> float | None:
    if value is None:
        return None
    try:  # RFC 3339, as feedback timestamps (any fraction, Z or an offset)
        return datetime.fromisoformat(normalize_timestamp(str(value)).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidRequest(
            "infusionTime: an RFC 3339 date-time with a time zone", expression="infusionTime"
        ) from None


# ---------------------------------------------------------------------- Subscription notifications


@bp.post("/watch/notify/<token>")
def notify(token: str) -> Response:
    """A rest-hook notification: check the Subscription's secret, then make the patient due. The body is
    only inspected for its type; the data are read with the watcher's own token and queries."""
    state = _state()
    entry = state.store.by_subscription_token(token) if len(token) <= 64 else None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if (
        entry is None
        or not entry.active
        or scheme.lower() != "bearer"
        or not secret_matches(secret, entry.subscription_secret_hash)
    ):
        SUBSCRIPTION_NOTIFICATIONS.labels("refused").inc()
        return Response(status=404)
    if (request.content_length or 0) > MAX_NOTIFICATION_BYTES:
        return Response(status=413)
    try:
        body = orjson.loads(request.get_data(cache=False)[: MAX_NOTIFICATION_BYTES + 1])
    except orjson.JSONDecodeError:
        body = None
    kind = notification_kind(body)
    if kind == "handshake":
        SUBSCRIPTION_NOTIFICATIONS.labels("handshake").inc()
        return Response(status=200)
    state.store.mark_notified(entry.id, time.time())
    state.scheduler.wake()
    SUBSCRIPTION_NOTIFICATIONS.labels("accepted").inc()
    return Response(status=200)


# ---------------------------------------------------------------------- the worklist page


def urgency(entry: WatchEntry) -> tuple[Any, ...]:
    """met before possible before the rest; higher grade first; then a problem; then the latest change."""
    return (
        -rank(entry.status),
        -(entry.grade or 0),
        entry.problem is None,
        -(entry.last_change or 0),
        entry.id,
    )


@bp.get("/watch/")
def watch_home() -> BaseResponse:
    return redirect(WORKLIST_PATH, 302)


def _signed_in_server(state: WatchState) -> str | None:
    """The watched server of this browser's unexpired SMART sign-in, if any."""
    session = current_session()
    context = session.context if session is not None else None
    if context is None or context.expired() or not context.access_token:
        return None
    server = state.servers.find(context.iss)
    return server.base if server is not None else None


@bp.get(WORKLIST_PATH)
def worklist() -> BaseResponse | str:
    state = _state()
    # Open like the rest of development mode: only without trusted clients (with them, sign-in as in
    # production).
    open_list = state.settings.dev_mode and not state.settings.trusted_clients_configured
    signed_in = _signed_in_server(state)
    if signed_in is None and not open_list:
        # Its form leads (through /smart/standalone) to the EHR's authorization server, and browsers apply
        # form-action to redirects: as the dashboard's start page, this page cannot restrict form targets.
        g.watch_csp = START_PAGE_POLICY
        return render_template("watch/signin.html", servers=list(state.servers), return_to=WORKLIST_PATH)
    servers = {signed_in} if signed_in is not None else {server.base for server in state.servers}
    entries = sorted(state.store.active(servers), key=urgency)
    problems = state.store.delivery_problems()
    rows = [_row(entry, problems.get(entry.id)) for entry in entries]
    return render_template(
        "watch/worklist.html",
        rows=rows,
        refresh_s=int(current_app.config.get("WATCH_REFRESH_S", REFRESH_S)),
        now=iso(time.time()),
        now_text=_shown(time.time()),
        dev_open=signed_in is None,
        servers=list(state.servers),
    )


def _shown(epoch: float | None) -> str:
    """A time as the dashboard shows times: `2026-03-15 20:00 UTC`."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _row(entry: WatchEntry, delivery_problem: str | None) -> dict[str, Any]:
    problems = [p for p in (entry.problem, delivery_problem) if p]
    return {
        "entry": entry,
        "status": entry.status or "not evaluated",
        "status_class": f"status-{entry.status or 'pending'}",
        "grade": entry.grade,
        "day": entry.day_post_infusion,
        "spark": sparkline(entry.ferritin),
        "last_change": iso(entry.last_change),
        "last_change_text": _shown(entry.last_change),
        "change_from": entry.change_from,
        "last_evaluated": iso(entry.last_evaluated),
        "last_evaluated_text": _shown(entry.last_evaluated),
        "problems": problems,
        "open_url": url_for("watch.open_dashboard", entry_id=entry.entry_id),
        "subscription": entry.subscription_state,
    }


@bp.get(f"{WORKLIST_PATH}/open/<entry_id>")
def open_dashboard(entry_id: str) -> BaseResponse:
    """Put the watched patient into this browser's SMART session and show the dashboard. Without a sign-in
    on that patient's FHIR server, sign in first (standalone launch) and come back here."""
    state = _state()
    entry = state.store.by_entry_id(entry_id) if len(entry_id) <= 64 else None
    if entry is None or not entry.active:
        raise SmartError(
            404, "not-watched", "Not on the watch list", "This patient is no longer watched.", relaunch=False
        )
    session = current_session()
    context = session.context if session is not None else None
    if (
        session is None
        or context is None
        or context.expired()
        or normalize_base_url(context.iss) != entry.fhir_server
    ):
        query = urlencode({"iss": entry.fhir_server, "return_to": f"{WORKLIST_PATH}/open/{entry_id}"})
        return redirect(f"{url_for('smart.standalone')}?{query}", 302)
    if context.patient_locked and context.patient != entry.patient_id:
        raise SmartError(
            403,
            "patient-locked",
            "This sign-in is for another patient",
            "The dashboard was opened for one patient from the EHR. Open the worklist from a sign-in "
            "without a patient (the standalone launch) to move between patients.",
            relaunch=False,
        )
    context.patient, context.app_context = entry.patient_id, AppContext()
    session.at_override = None
    smart_state().store.save(session)
    return redirect(url_for("smart.dashboard"), 303)
