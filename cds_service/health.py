"""Liveness probe. The operability blueprint (/, /healthz, /metrics, /openapi.json) will replace this."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from cds_service import __version__
from cds_service.state import get_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """200 with the version and mode; no network, no database round trip."""
    mode = "development" if get_state().settings.dev_mode else "production"
    return jsonify({"status": "ok", "version": __version__, "mode": mode})
