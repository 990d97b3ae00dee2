"""Liveness (/healthz) and readiness (/readyz) probes. Both are unauthenticated and carry no PHI.

* /healthz answers 200 while the process serves requests: no network, no database round trip, so a slow
  database never gets a healthy worker restarted. It reports the version and the mode.
* /readyz answers 200 only when the service can do its job: mappings and card content loaded, and the
  feedback database answering ``SELECT 1`` within READY_DB_TIMEOUT_S; otherwise 503 with one reason per
  failing check. Reasons are short and generic (exception type, no URLs or credentials); details go to
  the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from cds_service import __version__
from cds_service.web.state import ServiceState, get_state

bp = Blueprint("health", __name__)
log = logging.getLogger("cds_service.web.health")
READY_DB_TIMEOUT_S = 2.0
Check = Callable[[ServiceState], str | None]  # None when fine, else the reason


@bp.get("/healthz")
def healthz() -> Response:
    """200 with the version and mode; no network, no database round trip."""
    mode = "development" if get_state().settings.dev_mode else "production"
    return jsonify({"status": "ok", "version": __version__, "mode": mode})


@bp.get("/readyz")
def readyz() -> Response:
    """200 when every readiness check passes, else 503 naming the failing checks."""
    state = get_state()
    results = {name: _run(name, check, state) for name, check in CHECKS.items()}
    ready = all(reason is None for reason in results.values())
    body = {
        "status": "ready" if ready else "not ready",
        "version": __version__,
        "checks": {
            name: {"ok": True} if reason is None else {"ok": False, "reason": reason}
            for name, reason in results.items()
        },
    }
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response


def check_mappings(state: ServiceState) -> str | None:
    """The knowledge base (mappings/) is loaded and the registry has services."""
    if not state.knowledge.analytes or not state.knowledge.criteria:
        return "mappings not loaded"
    return None if state.registry.services else "no CDS services registered"


def check_card_content(state: ServiceState) -> str | None:
    """cards/ templates and treatment content are loaded (validated at start against the knowledge base)."""
    return None if state.cards.options and state.cards.cards else "card content not loaded"


def check_database(state: ServiceState) -> str | None:
    """The feedback database answers SELECT 1 within READY_DB_TIMEOUT_S."""
    outcome: list[str | None] = []

    def ping() -> None:
        outcome.append(_guarded("database", lambda: _select_one(state)))

    # A thread bounds the wait: a database that accepts the connection but never answers must not hang the
    # probe (the orchestrator would time out and learn nothing).
    worker = threading.Thread(target=ping, name="readyz-db", daemon=True)
    worker.start()
    worker.join(READY_DB_TIMEOUT_S)
    return outcome[0] if outcome else f"database did not answer within {READY_DB_TIMEOUT_S:g} s"


def _select_one(state: ServiceState) -> None:
    with state.feedback.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


CHECKS: dict[str, Check] = {
    "mappings": check_mappings,
    "cardContent": check_card_content,
    "database": check_database,
}


def _run(name: str, check: Check, state: ServiceState) -> str | None:
    return _guarded(name, lambda: check(state))


def _guarded(name: str, call: Callable[[], str | None]) -> str | None:
    try:
        return call()
    except Exception as exc:
        log.warning("readiness check failed", extra={"check": name, "error_type": type(exc).__name__})
        return f"{name} check failed ({type(exc).__name__})"
