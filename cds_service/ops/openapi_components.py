"""Components of the OpenAPI document that have no file in cds_service/schemas/: error bodies, the small
JSON answers of the operations and preview endpoints, the request-id header and the client JWT scheme."""

from __future__ import annotations

from typing import Any

_TEXT = {"type": "string", "minLength": 1}


def operation_outcome() -> dict[str, Any]:
    """FHIR R4 OperationOutcome as cds_service.web.outcome writes it (one issue)."""
    issue = {
        "type": "object",
        "required": ["severity", "code"],
        "properties": {
            "severity": {"enum": ["fatal", "error", "warning", "information"]},
            "code": _TEXT,
            "diagnostics": {"type": "string"},
            "expression": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        },
    }
    return {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {"type": "array", "minItems": 1, "items": issue},
        },
    }


def _readiness() -> dict[str, Any]:
    check = {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}, "reason": _TEXT},
    }
    return {
        "type": "object",
        "required": ["status", "version", "checks"],
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "version": _TEXT,
            "checks": {"type": "object", "additionalProperties": check},
        },
    }


def _preview_build() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["hook"],
        "description": "Exactly one of scenario (a fixtures/scenarios name) or bundle (a FHIR Bundle with "
        "exactly one Patient, whose id is a FHIR id).",
        "oneOf": [{"required": ["scenario"]}, {"required": ["bundle"]}],
        "properties": {
            "hook": {"enum": ["patient-view", "order-select", "order-sign"]},
            "scenario": {"type": "string"},
            "bundle": {
                "type": "object",
                "required": ["resourceType", "entry"],
                "properties": {"resourceType": {"const": "Bundle"}, "entry": {"type": "array"}},
            },
            "drug": {"type": "string", "description": "Drug class of the draft order (order hooks)"},
            "rebase": {"type": "boolean", "description": "Shift every date so the instant becomes now"},
        },
    }


def _preview_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["serviceId", "hook", "request", "evaluationInstant"],
        "properties": {
            "serviceId": _TEXT,
            "hook": _TEXT,
            "request": {"$ref": "#/components/schemas/CdsRequest"},
            "evaluationInstant": {"type": ["string", "null"], "format": "date-time"},
            "shiftedBy": {"type": ["string", "null"]},
        },
    }


def component_extras() -> dict[str, Any]:
    """schemas, headers and securitySchemes to merge into the document's components."""
    return {
        "schemas": {
            "OperationOutcome": operation_outcome(),
            "FeedbackResult": {
                "type": "object",
                "required": ["received", "stored"],
                "properties": {
                    "received": {"type": "integer", "minimum": 0},
                    "stored": {"type": "integer", "minimum": 0},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "version", "mode"],
                "properties": {
                    "status": {"const": "ok"},
                    "version": _TEXT,
                    "mode": {"enum": ["development", "production"]},
                },
            },
            "Readiness": _readiness(),
            "PreviewBuild": _preview_build(),
            "PreviewRequest": _preview_request(),
        },
        "headers": {
            "X-Request-Id": {
                "description": "The request id (the client's X-Request-Id when it is safe, else a new one)",
                "schema": {"type": "string"},
            }
        },
        "securitySchemes": {
            "cdsClientJwt": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "CDS Hooks client JWT (iss, sub, aud = the endpoint URL, exp, iat, jti), "
                "signed with a key from the client's JWKS. Not required in development mode.",
            }
        },
    }


def text_response(media_type: str, description: str) -> dict[str, Any]:
    """A response whose body is a string of `media_type` (HTML pages, static files)."""
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def html_page(summary: str, description: str, tag: str, **extra: Any) -> dict[str, Any]:
    """A GET/POST operation answering an HTML page (extra keys are merged into the operation)."""
    return {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "responses": {"200": text_response("text/html", "The page")},
        **extra,
    }
