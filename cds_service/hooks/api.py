"""The CDS Hooks blueprint: discovery, hook invocation and feedback. Views only parse, delegate, answer.

Client authentication (app.config["CLIENT_AUTH"]) runs before every view except CORS preflights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from cds_service.engine.model import EvaluationResult
from cds_service.engine.units import parse_budget
from cds_service.errors import NotFound
from cds_service.hooks import validation
from cds_service.hooks.feedback import record_from_item
from cds_service.hooks.pipeline import HookEnvironment, run_hook
from cds_service.hooks.prefetch import FetchEnvironment
from cds_service.hooks.request import HookRequest, parse_hook_request, parse_json_body
from cds_service.watch import watch_state
from cds_service.web.gc_tuning import COLLECTOR_HOLD
from cds_service.web.observability import annotate, request_started_at, timed
from cds_service.web.state import get_state
from cds_service.web.wsgi_body import request_body

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.hooks.api")


def public_base_url() -> str:
    """CDS_PUBLIC_BASE_URL, or (development only) the URL the request came in on."""
    configured = get_state().settings.public_base_url
    return configured or request.url_root.rstrip("/")


@bp.before_request
def authenticate_client() -> None:
    """Every call but a preflight carries the client's credentials; `aud` is this exact endpoint URL."""
    if request.method == "OPTIONS":
        return
    with timed("auth"):
        identity = current_app.config["CLIENT_AUTH"](request, public_base_url() + request.path)
    g.client = identity
    annotate(client=identity.issuer)


@bp.before_request
def hold_collector() -> None:
    """Hook calls run with the cyclic collector held off (web.gc_tuning says why, and the backstop)."""
    if request.endpoint == "cds.invoke":
        COLLECTOR_HOLD.enter()
        g.collector_held = True


@bp.teardown_request
def release_collector(_error: BaseException | None) -> None:
    # Teardown runs after the view's locals (the parsed request) are gone, also when the view raised.
    if g.pop("collector_held", False):
        COLLECTOR_HOLD.exit()


@bp.get("/cds-services")
def discovery() -> Response:
    """The registry, as CDS Hooks discovery JSON (no network work)."""
    return jsonify(get_state().registry.discovery())


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    """Parse -> resolve prefetch -> evaluate -> render (see pipeline.run_hook)."""
    with timed("parse"):
        hook_request, service = parse_hook_request(
            get_state().registry, service_id, request_body(), request.mimetype
        )
    annotate(service_id=service.id, hook=service.hook)
    with parse_budget():  # new unit strings in this call's data share a bounded parsing time
        body, resolved = run_hook(hook_request, service, hook_environment(), timed)
    annotate(prefetch=resolved.sources, data_gaps=list(resolved.gaps), cards=len(body["cards"]))
    g.card_indicators = [card["indicator"] for card in body["cards"]]  # for the metrics, not the log line
    return jsonify(body)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """Store accepted/overridden feedback idempotently; 200 with counts."""
    state = get_state()
    if service_id not in state.registry.ids():
        raise NotFound(f"no CDS service with id '{service_id}'")
    # kept: the feedback metrics count outcomes from the same body after the view
    document: Any = parse_json_body(request_body(keep=True), request.mimetype)
    validation.check("feedback", document)
    records = [record_from_item(service_id, item) for item in document["feedback"]]
    with timed("store"):
        stored = state.feedback.add(records)
        alerts = current_app.config.get("REPEAT_ALERTS")
        if alerts is not None:
            alerts.feedback(records, datetime.now(UTC))
    annotate(service_id=service_id, feedback_received=len(records), feedback_stored=stored)
    return jsonify({"received": len(records), "stored": stored})


def hook_environment() -> HookEnvironment:
    """Collect the per-call settings and injected collaborators from the app config."""
    config, settings = current_app.config, get_state().settings
    clock = config.get("CLOCK")
    return HookEnvironment(
        fetch=FetchEnvironment(
            session=config["HTTP_SESSION"],
            server_allowed=config["FHIR_SERVER_POLICY"],
            allow_anonymous=settings.dev_mode,
            timeout_s=settings.fhir_timeout_s,
            max_pages=settings.fhir_max_pages,
            lookback_days=settings.prefetch_lookback_days,
        ),
        at=clock() if clock is not None else None,
        deadline=request_started_at() + settings.hook_deadline_s,
        base_url=public_base_url(),
        # The dashboard is served by this app: link it unless another launch URL is configured.
        smart_launch_url=settings.smart_launch_url or f"{public_base_url()}/smart/launch",
        uuid_factory=config["UUID_FACTORY"],
        knowledge=get_state().knowledge,
        cards=get_state().cards,
        validate_response=bool(config.get("VALIDATE_RESPONSES", True)),
        observe=_watch_observer(),
        repeat_alerts=config.get("REPEAT_ALERTS"),
    )


def _watch_observer() -> Callable[[HookRequest, EvaluationResult], None] | None:
    """Enrols the hook's patient in the watch list when the call shows a CAR-T infusion in the risk window
    (and the client may send the service to that FHIR server); never fails the hook call."""
    state = watch_state()
    if state is None:
        return None
    policy = current_app.config["FHIR_SERVER_POLICY"]

    def observe(hook_request: HookRequest, result: EvaluationResult) -> None:
        try:
            allowed = hook_request.fhir_server is not None and bool(policy(hook_request.fhir_server))
            state.observe_hook(hook_request, result, allowed)
        except Exception as exc:  # the card matters more than the enrolment: log by type only
            log.error(
                "watch enrolment failed", extra={"event": "watch-error", "error_type": type(exc).__name__}
            )

    return observe
