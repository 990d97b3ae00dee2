"""Path items and extra components of the OpenAPI document (assembled by cds_service.ops.openapi).

Error bodies of the JSON endpoints are FHIR OperationOutcomes (cds_service.web.outcome). Only statuses the
service really answers are listed: a 5xx is a bug, and the schemathesis test fails on any.
"""

from __future__ import annotations

from typing import Any

from cds_service.ops.openapi_components import html_page, text_response
from cds_service.ops.openapi_smart import smart_paths
from cds_service.ops.openapi_watch import watch_paths

OUTCOME = "#/components/schemas/OperationOutcome"
EVALUATION_INSTANT_HEADER = "X-CDS-Evaluation-Instant"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {"application/json": {"schema": schema}},
    }


def _outcomes(**statuses: str) -> dict[str, Any]:
    """`_outcomes(s400="...")` -> {"400": OperationOutcome response}."""
    return {key.removeprefix("s"): _json({"$ref": OUTCOME}, text) for key, text in statuses.items()}


# The feedback schema's pattern admits 0000-00-00T00:00:00Z; the service needs a real instant too (400).
_REAL_INSTANTS = {
    "properties": {
        "feedback": {"items": {"properties": {"outcomeTimestamp": {"type": "string", "format": "date-time"}}}}
    }
}
_CLIENT_JWT: list[dict[str, list[str]]] = [{"cdsClientJwt": []}, {}]  # {}: development mode (no JWT)
_CORS_PREFLIGHT = {
    "tags": ["cds-hooks"],
    "summary": "CORS preflight",
    "description": "Answered without authentication; CORS headers per CDS_CORS_ORIGINS.",
    "responses": {"200": {"description": "Preflight answer (no body)"}},
}


def _service_id(service_ids: list[str]) -> dict[str, Any]:
    return {
        "name": "service_id",
        "in": "path",
        "required": True,
        "description": "A CDS service id from discovery",
        "schema": {"type": "string", "enum": service_ids},
    }


def cds_hooks_paths(service_ids: list[str], hooks: list[str]) -> dict[str, Any]:
    """Discovery, hook invocation and feedback (CDS Hooks 2.0). A hook call's `hook` must be one of
    `hooks` and served by the id in the path (else 400): the schema can say the first, not the second."""
    served_hook = {"properties": {"hook": {"enum": hooks}}} if hooks else {}
    invoke_errors = _outcomes(
        s400="Malformed JSON, schema violation (issue.expression names the field) or hook not served by "
        f"this id; also an invalid {EVALUATION_INSTANT_HEADER}",
        s401="Missing or invalid client JWT (no detail, by design)",
        s404="Unknown service id",
        s412="Required prefetch data neither prefetched nor fetchable (issue.expression: prefetch.<key>)",
        s413="Body larger than CDS_MAX_REQUEST_BYTES",
        s415="Content-Type is not JSON",
    )
    return {
        "/cds-services": {
            "get": {
                "tags": ["cds-hooks"],
                "operationId": "discovery",
                "summary": "CDS Hooks discovery",
                "security": _CLIENT_JWT,
                "responses": {
                    "200": _json(_ref("Discovery"), "The services, their hooks and prefetch templates"),
                    **_outcomes(s401="Missing or invalid client JWT"),
                },
            },
            "options": _CORS_PREFLIGHT,
        },
        "/cds-services/{service_id}": {
            "post": {
                "tags": ["cds-hooks"],
                "operationId": "invokeService",
                "summary": "Call a CDS service (patient-view, order-select or order-sign)",
                "security": _CLIENT_JWT,
                "parameters": [_service_id(service_ids), _evaluation_instant()],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"allOf": [_ref("CdsRequest"), served_hook]}}},
                },
                "responses": {"200": _json(_ref("CdsResponse"), "Cards (possibly none)"), **invoke_errors},
            },
            "options": _CORS_PREFLIGHT,
        },
        "/cds-services/{service_id}/feedback": {
            "post": {
                "tags": ["cds-hooks"],
                "operationId": "feedback",
                "summary": "Report accepted or overridden cards (stored idempotently)",
                "security": _CLIENT_JWT,
                "parameters": [_service_id(service_ids)],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"allOf": [_ref("Feedback"), _REAL_INSTANTS]}}
                    },
                },
                "responses": {
                    "200": _json(_ref("FeedbackResult"), "Items received and newly stored"),
                    **_outcomes(
                        s400="Malformed JSON or schema violation",
                        s401="Missing or invalid client JWT",
                        s404="Unknown service id",
                        s413="Body too large",
                        s415="Content-Type is not JSON",
                    ),
                },
            },
            "options": _CORS_PREFLIGHT,
        },
    }


def _evaluation_instant() -> dict[str, Any]:
    return {
        "name": EVALUATION_INSTANT_HEADER,
        "in": "header",
        "required": False,
        "description": "Development mode only (ignored otherwise): evaluate at this RFC 3339 instant "
        "instead of now. Used by the card preview page to replay fixture scenarios at their instant.",
        "schema": {"type": "string", "format": "date-time"},
    }


def operations_paths() -> dict[str, Any]:
    """Health, readiness, metrics and this document."""
    return {
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "operationId": "healthz",
                "summary": "Liveness: the process serves requests (no database round trip)",
                "responses": {"200": _json(_ref("Health"), "Alive; version and mode")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "operationId": "readyz",
                "summary": "Readiness: mappings and card content loaded, database reachable",
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready"),
                    "503": _json(_ref("Readiness"), "Not ready; the failing checks carry a reason"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "operationId": "metrics",
                "summary": "Prometheus metrics: text format 0.0.4, or OpenMetrics when Accept asks for it",
                "responses": {
                    "200": {
                        "description": "Metrics; no PHI in any label",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "operationId": "openapi",
                "summary": "This OpenAPI 3.1 document",
                "responses": {"200": _json({"type": "object"}, "The document")},
            }
        },
    }


def preview_paths() -> dict[str, Any]:
    """The card preview page and its helpers."""
    static_name = {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
    not_found = _outcomes(s404="No such file")
    return {
        "/": {"get": html_page("Card preview page", "Send scenarios through the service.", "preview")},
        "/preview/hook-request": {
            "post": {
                "tags": ["preview"],
                "operationId": "buildPreviewRequest",
                "summary": "Build a hook request from a fixture scenario or a FHIR Bundle",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PreviewBuild")}},
                },
                "responses": {
                    "200": _json(_ref("PreviewRequest"), "The hook request, its service id and instant"),
                    **_outcomes(
                        s400="Invalid build request or Bundle",
                        s404="Unknown scenario, or the builder is off (CDS_PREVIEW_BUILDER)",
                        s413="Body larger than 4 MiB",
                        s415="Content-Type is not JSON",
                        s429="Too many requests from this client (CDS_RATE_LIMIT)",
                    ),
                },
            }
        },
        "/preview/evidence": {
            "post": html_page(
                "Evidence view: the dashboard for one hook request, without SMART",
                "Evaluates the hook request as the hook does (same prefetch resolution, knowledge and "
                "instant: the `instant` field where the hook honours the instant header) and renders the "
                "SMART dashboard's template: criteria tables, instruments side by side, the review's "
                "treatment lines, data quality, every source and the UNVERIFIED list. Off unless "
                "CDS_PREVIEW_EVIDENCE (on in development); outside development no FHIR server is contacted.",
                "preview",
                operationId="evidenceView",
                requestBody={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": _evidence_form()},
                        "application/json": {"schema": _evidence_json()},
                    },
                },
                responses={
                    "200": text_response("text/html", "The evidence page (never cached)"),
                    **_outcomes(
                        s400="Invalid form, hook request or instant",
                        s404="Unknown service, or the evidence view is off (CDS_PREVIEW_EVIDENCE)",
                        s412="A required prefetch key is missing and cannot be fetched",
                        s413="Body larger than CDS_MAX_REQUEST_BYTES",
                        s415="Neither a form nor JSON",
                        s429="Too many requests from this client (CDS_RATE_LIMIT)",
                    ),
                },
            )
        },
        "/preview/static/{filename}": {
            "get": {
                "tags": ["preview"],
                "summary": "Script and style sheet of the preview page",
                "parameters": [static_name],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    **not_found,
                },
            }
        },
        "/static/{filename}": {
            "get": {
                "tags": ["operations"],
                "summary": "Flask's built-in static route (the service has no app-level static files)",
                "parameters": [static_name],
                "responses": not_found,
            }
        },
    }


def _evidence_form() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["service", "request"],
        "properties": {
            "service": {"type": "string", "description": "The CDS service id the request was sent to"},
            "request": {"type": "string", "description": "The hook request, as JSON text"},
            "instant": {"type": "string", "description": "RFC 3339 evaluation instant (development)"},
        },
    }


def _evidence_json() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["serviceId", "request"],
        "properties": {
            "serviceId": {"type": "string"},
            "request": {"type": "object", "description": "The hook request"},
            "instant": {"type": "string"},
        },
    }


def benchmark_paths(service_ids: list[str]) -> dict[str, Any]:
    """POST /_bench/floor and /_bench/read/{service_id}: served only with CDS_BENCH_FLOOR=1
    (cds_service.web.bench_floor)."""
    return {
        "/_bench/floor": {
            "post": {
                "tags": ["benchmark"],
                "operationId": "benchFloor",
                "summary": "Benchmark floor: parses the body like a hook call and answers no cards",
                "description": "Registered only when CDS_BENCH_FLOOR=1 (benchmarks/). No authentication.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
                "responses": {
                    "200": _json(_ref("CdsResponse"), 'Always {"cards": []}'),
                    **_outcomes(
                        s400="Malformed JSON", s413="Body too large", s415="Content-Type is not JSON"
                    ),
                },
            }
        },
        "/_bench/read/{service_id}": {
            "post": {
                "tags": ["benchmark"],
                "operationId": "benchRead",
                "summary": "Benchmark ceiling: reads a hook call as the hook does, stops before the clinical "
                "work and answers no cards",
                "description": "Registered only when CDS_BENCH_FLOOR=1 (benchmarks/). No authentication; it "
                "reads only the request's prefetch and never queries a fhirServer.",
                "parameters": [_service_id(service_ids)],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CdsRequest")}},
                },
                "responses": {
                    "200": _json(_ref("CdsResponse"), 'Always {"cards": []}'),
                    **_outcomes(
                        s400="Malformed JSON, schema violation or hook not served by this id",
                        s404="Unknown service id",
                        s412="Required prefetch data not in the request",
                        s413="Body too large",
                        s415="Content-Type is not JSON",
                    ),
                },
            }
        },
    }


def path_items(service_ids: list[str], hooks: list[str]) -> dict[str, Any]:
    """Every documented path."""
    return {
        **cds_hooks_paths(service_ids, hooks),
        **operations_paths(),
        **preview_paths(),
        **smart_paths(),
        **watch_paths(),
        **benchmark_paths(service_ids),
    }
