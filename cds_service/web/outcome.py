"""Errors as FHIR OperationOutcome JSON bodies: never a stack trace, never internals in a 500.

* CDSServiceError -> its status, issue.code, diagnostics and issue.expression (JSON path(s) of the field).
* Werkzeug HTTP errors (404 no route, 405 method, 413 too large, ...) -> the same shape.
* Anything else -> 500 with a generic OperationOutcome; the exception is logged by type and traceback
  frames only (exception messages may quote patient data).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from cds_service.errors import CDSServiceError, PrefetchUnavailable, Unauthorized
from cds_service.web.observability import annotate

log = logging.getLogger("cds_service.errors")
HTTP_ISSUE_CODES = {
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
}


def operation_outcome(
    code: str, diagnostics: str, expressions: Sequence[str] = (), severity: str = "error"
) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expressions:
        issue["expression"] = list(expressions)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def handle_service_error(error: CDSServiceError) -> Response:
    if isinstance(error, Unauthorized):
        # 401 carries no detail (CDS Hooks best practice); the reason goes to the log only.
        log.warning(
            "client authentication failed", extra={"reason": error.message, "request_id": g.get("request_id")}
        )
        response = outcome_response(401, operation_outcome("login", "authentication required"))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(error, PrefetchUnavailable):
        annotate(prefetch_unavailable=list(error.keys))
    body = operation_outcome(error.issue_code, error.message, error.expressions)
    return outcome_response(error.status, body)


def handle_http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code = HTTP_ISSUE_CODES.get(status, "invalid" if status < 500 else "exception")
    diagnostics = f"{status} {error.name}" + (f": {error.description}" if status in (405, 413, 429) else "")
    response = outcome_response(status, operation_outcome(code, diagnostics))
    headers = dict(error.get_headers())
    for header in ("Allow", "Retry-After"):
        if header in headers:
            response.headers[header] = headers[header]
    if status == 413:
        # The rest of a refused body is never read: close the connection rather than let the server
        # drain an arbitrarily long (chunked) body before the next request on it.
        response.headers["Connection"] = "close"
    return response


def handle_unexpected(error: Exception) -> Response:
    frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(error.__traceback__)]
    log.error(
        "unhandled exception",
        extra={"error_type": type(error).__name__, "frames": frames[-15:], "request_id": g.get("request_id")},
    )
    return outcome_response(500, operation_outcome("exception", "internal error"))


def init_app(app: Flask) -> None:
    """Register the JSON error handlers on the app (blueprints may override them for their own routes)."""
    app.register_error_handler(CDSServiceError, handle_service_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
