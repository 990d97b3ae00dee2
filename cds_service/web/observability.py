"""Request ids, per-phase timings and one structured JSON log line per request.

The log line holds: request id, method, endpoint (the route rule, never the raw path), service id (only when
registered), hook, status, total and per-phase milliseconds, where each prefetch key came from, and the
client issuer. Never PHI, patient ids, URLs with queries, tokens or request bodies.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, Response, current_app, g, request

REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("cds_service.access")
log = logging.getLogger("cds_service.web.observability")
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
LISTENERS_KEY = "cds_service.request_listeners"
RequestListener = Callable[[Mapping[str, Any], Response], None]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any `extra={...}` fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        document.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """Attach a JSON stderr handler to the `cds_service` logger once (idempotent across app instances)."""
    logger = logging.getLogger("cds_service")
    if not any(getattr(h, "_cds_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._cds_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    # urllib3 logs every request URL at DEBUG, and FHIR query URLs carry the patient id.
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, logging.getLogger("urllib3").level))


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Record the duration of `phase` (ms) for this request's log line."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases: dict[str, float] = g.setdefault("phases", {})
        phases[phase] = round((time.perf_counter() - start) * 1000, 2)


def annotate(**fields: Any) -> None:
    """Add non-PHI fields (hook, service id, prefetch sources, ...) to this request's log line."""
    g.setdefault("log_fields", {}).update(fields)


def request_started_at() -> float:
    """`time.monotonic()` when this request began (the hook deadline counts from it)."""
    return float(g.get("started_monotonic", time.monotonic()))


def _begin() -> None:
    g.started_monotonic = time.monotonic()
    g.started_perf = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    rule = request.url_rule.rule if request.url_rule is not None else None
    fields = {
        "event": "request",
        "request_id": g.get("request_id"),
        "method": request.method,
        "endpoint": rule or "(no route)",
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - g.get("started_perf", time.perf_counter())) * 1000, 2),
        "phases": g.get("phases", {}),
        **g.get("log_fields", {}),
    }
    access_log.info("request", extra=fields)
    _notify(fields, response)
    return response


def add_request_listener(app: Flask, listener: RequestListener) -> None:
    """Call `listener(fields, response)` with every request's log fields (metrics use this)."""
    app.extensions.setdefault(LISTENERS_KEY, []).append(listener)


def _notify(fields: Mapping[str, Any], response: Response) -> None:
    for listener in current_app.extensions.get(LISTENERS_KEY, ()):
        try:
            listener(fields, response)
        except Exception as exc:  # a metrics bug must never turn an answered request into a 500
            log.error(
                "request listener failed",
                extra={"error_type": type(exc).__name__, "request_id": fields.get("request_id")},
            )


def init_app(app: Flask) -> None:
    """Install request-id handling and the per-request log line."""
    configure_logging()
    app.before_request(_begin)
    app.after_request(_finish)
