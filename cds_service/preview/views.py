"""The card preview page (GET /) and its request builder (POST /preview/hook-request).

The page sends hook requests to the real /cds-services/{id} endpoint and feedback to the real feedback
endpoint from the browser: nothing here evaluates patients. The builder only turns a fixture scenario (or a
pasted FHIR Bundle) into the hook request an EHR would send, and names the instant to evaluate it at.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, jsonify, render_template, request
from flask.blueprints import BlueprintSetupState

from cds_service import __version__
from cds_service.config import Settings
from cds_service.engine.knowledge import Knowledge
from cds_service.errors import InvalidRequest, NotFound
from cds_service.hooks.request import parse_json_body
from cds_service.preview import clock
from cds_service.preview.builder import (
    DraftDrug,
    build_hook_request,
    bundle_resources,
    draft_drugs,
    service_for_hook,
)
from cds_service.preview.evidence import evidence_page
from cds_service.preview.rebase import day_shift_for, rebase, shift_for
from cds_service.preview.scenarios import find_scenario, list_scenarios
from cds_service.web.state import get_state
from cds_service.web.wsgi_body import request_body

# A pasted Bundle is built into a request in proportion to its size; the largest fixture scenario is 1.7 MB.
MAX_BUILD_BYTES = 4 * 1024 * 1024
LAUNCHER_PROBE_S = 0.5  # a local launcher answers a connection at once; a dead one is refused at once
bp = Blueprint(
    "preview",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/preview/static",
)
# The page runs only its own script and style sheet, talks and posts forms (the evidence view) only to this
# origin, and is never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The evidence view (a dashboard page): no scripts at all, styles and images from this origin only.
EVIDENCE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@bp.record_once
def _install_clock(setup: BlueprintSetupState) -> None:
    app = setup.app
    assert isinstance(app, Flask)
    clock.install(app)


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@bp.get("/")
def page() -> str:
    """The preview page: scenarios, hooks and draft drugs are rendered into it."""
    state = get_state()
    services = [{"id": s.id, "hook": s.hook, "title": s.title} for s in state.registry.services]
    scenarios = [{"name": s.name, "title": s.title, "at": _rfc3339(s.at)} for s in list_scenarios()]
    drugs = [{"id": d.id, "label": d.label} for d in draft_drugs(state.knowledge)]
    return render_template(
        "preview/index.html",
        version=__version__,
        dev_mode=state.settings.dev_mode,
        services=services,
        scenarios=scenarios,
        drugs=drugs,
        instant_header=clock.HEADER,
        ehr_launch=running_launcher(state.settings),
        evidence=state.settings.preview_evidence,
    )


def running_launcher(settings: Settings) -> str | None:
    """The EHR launcher the page may hand the card's SMART link to: development only, configured
    (CDS_PREVIEW_EHR_LAUNCH_URL; `make run` names `make stack`'s) and accepting connections now. A stack
    started later is found on the next page load; without one the link opens the evidence view."""
    url = settings.preview_ehr_launch_url
    if not settings.dev_mode or url is None:
        return None
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=LAUNCHER_PROBE_S):
            return url
    except OSError:
        return None


@bp.post("/preview/hook-request")
def hook_request() -> Response:
    """Build the hook request for a scenario or a Bundle (see the OpenAPI PreviewBuild schema).

    Off unless CDS_PREVIEW_BUILDER (on by default in development only): 404 before the body is read."""
    if not get_state().settings.preview_builder:
        raise NotFound("the preview request builder is off (CDS_PREVIEW_BUILDER; on in development mode)")
    document: Any = parse_json_body(request_body(MAX_BUILD_BYTES), request.mimetype)
    if not isinstance(document, dict):
        raise InvalidRequest("expected a JSON object")
    state = get_state()
    service = service_for_hook(state.registry, _string(document, "hook", required=True) or "")
    bundle, instant = _source(document)
    shifted_by: str | None = None
    if _flag(document, "rebase"):
        if instant is None:
            raise InvalidRequest("rebase: needs an instant (a scenario, or a Bundle with a timestamp)")
        shift = shift_for(instant, datetime.now(UTC))
        bundle = rebase(bundle, shift, day_shift_for(instant, shift))
        instant, shifted_by = None, _describe(shift.total_seconds())
    drug = _drug(document, state.knowledge) if service.hook != "patient-view" else None
    today = (instant or datetime.now(UTC)).date()
    hook = build_hook_request(service, bundle_resources(bundle), drug, today)
    return jsonify(
        {
            "serviceId": service.id,
            "hook": service.hook,
            "evaluationInstant": _rfc3339(instant) if instant else None,
            "shiftedBy": shifted_by,
            "request": hook,
        }
    )


@bp.post("/preview/evidence")
def evidence() -> Response:
    """The dashboard for a hook request, without SMART (cds_service.preview.evidence); an HTML page that
    holds patient data: never cached, never framed, no scripts."""
    response = Response(evidence_page(), mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = EVIDENCE_POLICY
    return response


def _source(document: dict[str, Any]) -> tuple[dict[str, Any], datetime | None]:
    """The Bundle to send and its instant: a scenario's `at`, or a pasted Bundle's `timestamp`."""
    name, bundle = document.get("scenario"), document.get("bundle")
    if (name is None) == (bundle is None):
        raise InvalidRequest("give exactly one of scenario or bundle")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidRequest("scenario: expected a string", expression="scenario")
        scenario = find_scenario(name)
        if scenario is None:
            raise NotFound(f"no fixture scenario called {name[:80]!r}")
        return scenario.bundle(), scenario.at
    if not isinstance(bundle, dict):
        raise InvalidRequest("bundle: expected a FHIR Bundle object", expression="bundle")
    return bundle, _timestamp(bundle)


def _timestamp(bundle: dict[str, Any]) -> datetime | None:
    raw = bundle.get("timestamp")
    if not isinstance(raw, str):
        return None
    try:
        return clock.parse_instant(raw)
    except InvalidRequest:
        return None  # a Bundle with an odd timestamp is evaluated at now


def _drug(document: dict[str, Any], knowledge: Knowledge) -> DraftDrug:
    wanted = _string(document, "drug") or "tocilizumab"
    drug = next((d for d in draft_drugs(knowledge) if d.id == wanted), None)
    if drug is None:
        known = ", ".join(d.id for d in draft_drugs(knowledge))
        raise InvalidRequest(f"drug: expected one of {known}", expression="drug")
    return drug


def _string(document: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{key}: expected a string", expression=key)
    return value


def _flag(document: dict[str, Any], key: str) -> bool:
    value = document.get(key, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key}: expected true or false", expression=key)
    return value


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(seconds: float) -> str:
    """`+253 days 03:07:05` (sign, whole days, then h:m:s)."""
    sign = "-" if seconds < 0 else "+"
    days, rest = divmod(abs(int(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{sign}{days} days {hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
