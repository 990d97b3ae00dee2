"""GET /metrics and GET /openapi.json, and the metrics hooks installed when the blueprint is registered."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from cds_service.ops.openapi import document_for
from cds_service.web import metrics
from cds_service.web.observability import add_request_listener

bp = Blueprint("ops", __name__)


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus text exposition (no PHI in any label; see cds_service.web.metrics)."""
    return metrics.exposition(request.headers.get("Accept"))


@bp.get("/openapi.json")
def openapi_view() -> Response:
    """The OpenAPI 3.1 document of the routes this app serves."""
    return jsonify(document_for(current_app))


@bp.record_once
def _install_metrics(setup: BlueprintSetupState) -> None:
    app = setup.app
    assert isinstance(app, Flask)
    install_metrics(app)


def install_metrics(app: Flask) -> None:
    """Count requests from the log fields and time FHIR calls (feedback outcome counts read the body the
    view kept, cds_service.web.wsgi_body)."""
    add_request_listener(app, metrics.record_request)
    metrics.instrument_session(app.config.get("HTTP_SESSION"))
