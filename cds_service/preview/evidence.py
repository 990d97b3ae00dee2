"""The evidence view: the dashboard for one hook request, without SMART (POST /preview/evidence).

The preview page opens it from a card ("Evidence view", and "Open the IEC-HS dashboard" when no EHR launcher
is reachable) with the very hook request it sent. The request runs through the hook's own evaluation
(cds_service.hooks.pipeline.evaluate_request: prefetch resolution, then the engine, with the app's knowledge
and the same evaluation instant) and is shown with the SMART dashboard's template and view model: criteria
tables, instruments side by side, the treatment lines, data quality and what could not be read, every source
and the UNVERIFIED list.

Off unless CDS_PREVIEW_EVIDENCE (on by default in development only). Outside development mode it never
contacts a FHIR server: it shows what the request carries (a key it lacks is a stated gap), since nothing
authenticates its caller.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from flask import current_app, render_template, request

from cds_service.errors import InvalidRequest, NotFound
from cds_service.hooks.api import hook_environment
from cds_service.hooks.pipeline import HookEnvironment, evaluate_request
from cds_service.hooks.request import is_json_media_type, parse_hook_request, parse_json_body
from cds_service.preview import clock
from cds_service.smart import fmt
from cds_service.smart.dashboard import build_view
from cds_service.web.observability import timed
from cds_service.web.state import get_state
from cds_service.web.wsgi_body import request_body

FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 8


def evidence_page() -> str:
    """Parse the form (or JSON) -> evaluate as the hook does -> the dashboard template, read-only."""
    state = get_state()
    if not state.settings.preview_evidence:
        raise NotFound("the evidence view is off (CDS_PREVIEW_EVIDENCE; on in development mode)")
    service_id, raw_request, instant = _fields()
    hook_request, service = parse_hook_request(state.registry, service_id, raw_request, "application/json")
    result, resolved = evaluate_request(hook_request, service, _environment(instant), timed)
    patient = resolved.data.get("patient")
    gaps = [f"{key}: {state.cards.prefetch_gaps.get(key, key)}" for key in resolved.gaps]
    view = build_view(
        state.knowledge,
        state.cards,
        result,
        patient if isinstance(patient, dict) else {},
        show_banner=True,
        view="iec-hs",
        at_source="hook" if instant else "now",
        notices=[],
        fhir_user=None,
        data_gaps=gaps,
    )
    return render_template("smart/evidence.html", v=view, f=fmt, service_id=service.id, hook=service.hook)


def _fields() -> tuple[str, bytes, str]:
    """(service id, the hook request as JSON bytes, the instant or ''), from a form or a JSON object."""
    body = request_body()
    if request.mimetype == FORM:
        try:
            form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=MAX_FIELDS)
        except ValueError:
            raise InvalidRequest(f"expected at most {MAX_FIELDS} form fields") from None
        service_id, instant = _one(form, "service"), _one(form, "instant")
        raw = _one(form, "request").encode("utf-8")
    elif is_json_media_type(request.mimetype):
        document: Any = parse_json_body(body, request.mimetype)
        if not isinstance(document, dict) or not isinstance(document.get("request"), dict):
            raise InvalidRequest("expected {serviceId, request, instant}", expression="request")
        service_id, instant = str(document.get("serviceId", "")), str(document.get("instant") or "")
        raw = orjson.dumps(document["request"])
    else:
        raise InvalidRequest(f"expected a form ({FORM}) or JSON, got {request.mimetype or 'none'!r}")
    if not service_id:
        raise InvalidRequest("service: the CDS service id is missing", expression="service")
    return service_id, raw, instant.strip()


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"{name}: given more than once", expression=name)
    return values[0] if values else ""


def _no_fhir_server(url: str) -> bool:
    return False


def _environment(instant: str) -> HookEnvironment:
    """The hook's own environment and evaluation instant: the instant field where the hook would honour the
    instant header (development, no injected clock), the injected clock otherwise; outside development no
    FHIR server is contacted."""
    env = hook_environment()
    clock_fn = current_app.config.get("CLOCK")
    at: datetime | None = env.at
    if clock_fn is clock.header_clock:
        at = clock.parse_instant(instant) if instant else None
    if not get_state().settings.dev_mode:
        env = dataclasses.replace(env, fetch=dataclasses.replace(env.fetch, server_allowed=_no_fhir_server))
    return dataclasses.replace(env, at=at)
