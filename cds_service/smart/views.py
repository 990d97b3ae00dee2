"""Routes of the SMART dashboard (blueprint ``smart`` under /smart).

=========================  =================================================================================
GET  /smart/launch         EHR launch (``iss``, ``launch``): allowlist, discovery, redirect to authorize
GET  /smart/standalone     standalone launch (``iss``; without it, a form asking for the FHIR server;
                           ``return_to``: a watch list page to show after sign-in)
GET  /smart/callback       code + state -> token -> /smart/dashboard (or /smart/picker without a patient)
GET  /smart/picker         patient picker (when the token carries no patient); POST chooses one
GET  /smart/dashboard      the dashboard; POST sets the evaluation instant
POST /smart/logout         ends the session (tokens are dropped)
=========================  =================================================================================

No URL after the callback carries a patient id or a token: the patient is chosen by POST and kept in the
server-side session.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Blueprint, Flask, g, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from cds_service.engine.evaluate import evaluate
from cds_service.engine.units import parse_budget
from cds_service.smart import fmt
from cds_service.smart.appcontext import AppContext, for_patient
from cds_service.smart.charts.panels import check_chart_defs
from cds_service.smart.dashboard import DashboardView, InstantSource, build_view
from cds_service.smart.dbstore import SqlSessionStore
from cds_service.smart.errors import SmartError, bad_launch
from cds_service.smart.fhirdata import fetch_record, read_patient, search_patients
from cds_service.smart.oauth import (
    authorization_request,
    exchange_code,
    launch_context,
    missing_access,
    verify_id_token,
)
from cds_service.smart.sessionkey import session_cipher
from cds_service.smart.sessions import (
    LaunchContext,
    LaunchKind,
    PendingAuthorization,
    SessionStore,
    SmartSession,
)
from cds_service.smart.settings import SmartSettings
from cds_service.smart.web import (
    EXTENSION_KEY,
    START_PAGE_POLICY,
    SmartState,
    after_request,
    check_csrf,
    current_session,
    error_page,
    http,
    http_error_page,
    issue_cookie,
    log,
    require_context,
    session_for_write,
    smart_state,
    unexpected_error_page,
)
from cds_service.web.state import get_state

# Where a standalone sign-in may return to (besides the dashboard): the watch list and its open links.
RETURN_TO = re.compile(r"/smart/worklist(?:/open/[A-Za-z0-9_-]{8,64})?")
bp = Blueprint("smart", __name__, url_prefix="/smart", template_folder="templates", static_folder="static")
bp.after_request(after_request)
bp.register_error_handler(SmartError, error_page)
bp.register_error_handler(HTTPException, http_error_page)
bp.register_error_handler(Exception, unexpected_error_page)


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    """Validate settings and chart threshold paths at start-up; create the session store.

    The default store lives in the service's database, on the feedback store's engine: `cds-service serve`
    creates it here, in the gunicorn master, and disposes of its connections in each forked worker.
    """
    app = state.app
    assert isinstance(app, Flask)
    core = get_state(app)
    settings = SmartSettings.load(app.config, core.settings)
    check_chart_defs(core.knowledge)
    store: SessionStore | None = app.config.get("SMART_SESSION_STORE")  # an empty store may be falsy
    if store is None:
        store = SqlSessionStore(
            core.feedback.engine,
            session_cipher(app.config, settings.dev_mode),
            ttl_s=settings.session_ttl_s,
            max_age_s=settings.session_max_age_s,
        )
    app.extensions[EXTENSION_KEY] = SmartState(settings, store)


@bp.get("/launch")
def launch() -> Response:
    iss, launch_id = request.args.get("iss", ""), request.args.get("launch", "")
    if not iss or not launch_id:
        raise bad_launch("The link must carry the EHR's FHIR server (iss) and a launch id (launch).")
    return _authorize(iss, "ehr", launch_id)


@bp.get("/standalone")
def standalone() -> Response | str:
    iss = request.args.get("iss", "")
    if not iss:
        g.smart_csp = START_PAGE_POLICY
        return render_template("smart/start.html")
    return_to = request.args.get("return_to") or None
    if return_to is not None and RETURN_TO.fullmatch(return_to) is None:
        raise bad_launch("return_to must name a page of the watch list.")
    return _authorize(iss, "standalone", None, return_to)


def _authorize(iss: str, kind: LaunchKind, launch_id: str | None, return_to: str | None = None) -> Response:
    """Allowlist first: a launch naming another FHIR server costs no request to it and no database row."""
    settings = smart_state().settings
    if not settings.iss_allowed(iss):
        raise SmartError(
            400,
            "iss-not-allowed",
            "This FHIR server is not configured for the dashboard",
            f"The launch named the FHIR server {iss!r}, which is not on this app's allowlist.",
            relaunch=False,
        )
    config = smart_state().discovery.get(http(), iss, settings)
    redirect_uri = settings.redirect_uri(request.host_url)
    url, pending = authorization_request(
        config, settings, iss=iss, redirect_uri=redirect_uri, kind=kind, launch=launch_id
    )
    pending.return_to = return_to
    smart_state().store.add_pending(session_for_write().id, pending)
    log.info(
        "smart authorization started",
        extra={"event": "smart-authorize", "kind": kind, "iss_host": urlsplit(iss).netloc},
    )
    return redirect(url, 302)


@bp.get("/callback")
def callback() -> Response:
    """Check state (bound to this browser), then error or code -> token -> launch context."""
    state = smart_state()
    session, pending = _pending_for_callback()
    if error := request.args.get("error"):
        raise _authorization_error(error, request.args.get("error_description", ""))
    code = request.args.get("code", "")
    if not code:
        raise SmartError(
            400, "no-code", "Authorization could not be completed", "No authorization code was returned."
        )
    context = _complete_authorization(pending, code)
    session.context, session.at_override = context, None
    issue_cookie(state.store.rotate(session))  # a new session id after sign-in (no session fixation)
    log.info(
        "smart authorization completed",
        extra={"event": "smart-token", "kind": context.kind, "scopes": len(context.scopes)},
    )
    if pending.return_to is not None:
        return redirect(pending.return_to, 303)
    return redirect(url_for(".dashboard" if context.patient else ".picker"), 303)


def _pending_for_callback() -> tuple[SmartSession, PendingAuthorization]:
    """The authorization this browser started with the returned `state` (used up: it cannot be replayed)."""
    session = current_session()
    state = request.args.get("state", "")
    pending = smart_state().store.take_pending(session.id, state) if session is not None and state else None
    if session is None or pending is None:
        raise SmartError(
            400,
            "state-mismatch",
            "This sign-in response was not expected",
            "The answer from the authorization server does not match a sign-in started in this browser "
            "(state mismatch or expired). For your protection it was not used.",
        )
    return session, pending


def _complete_authorization(pending: PendingAuthorization, code: str) -> LaunchContext:
    """Token request with the PKCE verifier, id_token check, and the granted scopes check."""
    settings = smart_state().settings
    token = exchange_code(pending, code, settings, settings.redirect_uri(request.host_url))
    fhir_user = None
    if isinstance(token.get("id_token"), str):
        fhir_user = verify_id_token(token["id_token"], pending, settings, http()).get("fhirUser")
    context = launch_context(token, pending, fhir_user if isinstance(fhir_user, str) else None)
    if missing := missing_access(context.scopes):
        raise SmartError(
            403,
            "insufficient-scope",
            "Not enough access was granted",
            "The dashboard needs read access to: " + ", ".join(missing) + ".",
        )
    return context


def _authorization_error(error: str, description: str) -> SmartError:
    detail = f" The authorization server said: {description}" if description else ""
    if error == "access_denied":
        return SmartError(
            403, "access-denied", "Access was not granted", f"Authorization was denied ({error}).{detail}"
        )
    return SmartError(
        400, "authorization-failed", "Authorization failed", f"Authorization failed ({error}).{detail}"
    )


@bp.get("/picker")
def picker() -> Response | str:
    session, context = require_context()
    if context.patient_locked:
        return redirect(url_for(".dashboard"), 303)
    return _picker_page(session, context, "")


def _picker_page(session: SmartSession, context: LaunchContext, name: str) -> str:
    patients = search_patients(http(), context, smart_state().settings, name)
    return render_template("smart/picker.html", patients=patients, csrf=session.csrf, name=name)


@bp.post("/picker")
def pick() -> Response | str:
    """Chooses the patient (``patient``), or filters the list by ``name`` when no patient is chosen."""
    session, context = require_context()
    check_csrf(session)
    if context.patient_locked:
        return redirect(url_for(".dashboard"), 303)
    patient_id = request.form.get("patient", "")
    if not patient_id:
        return _picker_page(session, context, request.form.get("name", ""))
    if not read_patient(http(), context, smart_state().settings, patient_id):
        raise SmartError(
            400, "patient-not-found", "Patient not found", "Choose a patient from the list.", relaunch=False
        )
    context.patient, context.app_context = patient_id, AppContext()
    session.at_override = _form_instant(request.form.get("at", ""))
    smart_state().store.save(session)
    return redirect(url_for(".dashboard"), 303)


@bp.get("/dashboard")
def dashboard() -> Response | str:
    """Read the record with the session's token, run the engine, render (the patient is never in the URL)."""
    session, context = require_context()
    if context.patient is None:
        return redirect(url_for(".picker"), 303)
    view, app_context = _dashboard_view(session, context)
    return render_template(
        "smart/dashboard.html", v=view, f=fmt, csrf=session.csrf, has_card_at=app_context.at is not None
    )


def _dashboard_view(session: SmartSession, context: LaunchContext) -> tuple[DashboardView, AppContext]:
    core = get_state()
    record = fetch_record(http(), context, smart_state().settings, core.knowledge)
    app_context = for_patient(context.app_context, context.patient)
    at, source = _instant(session, app_context)
    with parse_budget():
        result = evaluate(record.data, at=at, knowledge=core.knowledge)
    notices = list(app_context.notes)
    incomplete = [f"{t}: not every page could be read" for t in record.incomplete]
    notices += [
        f"Not every {t} page could be read; the picture may be incomplete." for t in record.incomplete
    ]
    view = build_view(
        core.knowledge,
        core.cards,
        result,
        record.patient,
        show_banner=context.need_patient_banner,
        view=app_context.view,
        at_source=source,
        notices=notices,
        fhir_user=context.fhir_user,
        data_gaps=incomplete,
    )
    return view, app_context


def _instant(session: SmartSession, app_context: AppContext) -> tuple[datetime | None, InstantSource]:
    """The evaluation instant: chosen on the page, else the card's (appContext), else now (None)."""
    if session.at_override is not None:
        return session.at_override, "chosen"
    if app_context.at is not None:
        return app_context.at, "card"
    return None, "now"


@bp.post("/dashboard")
def choose_instant() -> Response:
    session, _ = require_context()
    check_csrf(session)
    action = request.form.get("action", "set")
    if action == "card":
        session.at_override = None  # back to the card's instant (or now, without one)
    elif action == "now":
        session.at_override = datetime.now(UTC)
    else:
        session.at_override = _form_instant(request.form.get("at", "")) or session.at_override
    smart_state().store.save(session)
    return redirect(url_for(".dashboard"), 303)


def _form_instant(value: str) -> datetime | None:
    """A datetime-local field (read as UTC, like every time on the page); empty or invalid means none."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


@bp.post("/logout")
def logout() -> str:
    session = current_session()
    if session is not None:
        check_csrf(session)
        smart_state().store.delete(session.id)
    g.smart_clear_cookie = True
    return render_template("smart/ended.html")
