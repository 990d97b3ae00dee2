"""OpenAPI path items of the watch list (cds_service.watch; docs/watch-list.md).

Keep in step with cds_service/watch/views.py: tests/test_openapi.py fails when they differ. The JSON API and
the Subscription endpoint are fuzzed by tests/test_schemathesis.py; the worklist page sits under /smart (it
needs the SMART sign-in's cookie) and is covered by tests/test_watch_*.py.
"""

from __future__ import annotations

from typing import Any

from cds_service.ops.openapi_components import html_page, text_response

OUTCOME = "#/components/schemas/OperationOutcome"
_CLIENT_JWT: list[dict[str, list[str]]] = [{"cdsClientJwt": []}, {}]  # {}: development mode (no JWT)
_FHIR_ID = {"type": "string", "pattern": r"^[A-Za-z0-9\-.]{1,64}$"}
_INSTANT = {"type": ["string", "null"], "format": "date-time"}
_STATUS = {"enum": ["met", "possible", "not-met", "indeterminate", "not-applicable", None]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {"application/json": {"schema": schema}},
    }


def _outcome(description: str) -> dict[str, Any]:
    return _json({"$ref": OUTCOME}, description)


def watch_components() -> dict[str, Any]:
    """The JSON bodies of the watch list's API."""
    patient = {
        "type": "object",
        "required": ["patientId", "status", "grade", "dayPostInfusion", "lastEvaluated", "lastChange"],
        "properties": {
            "patientId": _FHIR_ID,
            "fhirServer": {"type": "string"},
            "status": _STATUS,
            "grade": {"type": ["integer", "null"], "minimum": 1},
            "dayPostInfusion": {"type": ["integer", "null"]},
            "lastEvaluated": _INSTANT,
            "lastChange": _INSTANT,
            "infusion": _INSTANT,
            "enrolledBy": {"enum": ["hook", "api", "list"]},
            "problem": {"type": ["string", "null"]},
            "subscription": {"type": ["string", "null"]},
            "ferritin": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["time", "value"],
                    "properties": {
                        "time": {"type": "string", "format": "date-time"},
                        "value": {"type": "number"},
                    },
                },
            },
            "enrolled": {"type": "boolean"},
        },
    }
    target: dict[str, Any] = {
        "type": "object",
        "required": ["patientId", "fhirServer"],
        "properties": {
            "patientId": _FHIR_ID,
            "fhirServer": {"type": "string", "format": "uri"},
        },
    }
    return {
        "WatchPatient": patient,
        "WatchPatients": {
            "type": "object",
            "required": ["patients"],
            "properties": {
                "patients": {"type": "array", "items": {"$ref": "#/components/schemas/WatchPatient"}}
            },
        },
        "WatchTarget": target,
        "WatchEnrollment": {
            **target,
            "properties": {
                **target["properties"],
                "infusionTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "The CAR-T infusion instant, if known (else read from the record)",
                },
            },
        },
        "WatchLeft": {
            "type": "object",
            "required": ["patientId", "fhirServer", "left"],
            "properties": {"patientId": _FHIR_ID, "fhirServer": {"type": "string"}, "left": {"const": True}},
        },
    }


def watch_paths() -> dict[str, Any]:
    unauthorized = _outcome("No valid client JWT (outside development mode)")
    invalid = _outcome("The body is not JSON, or patientId / fhirServer / infusionTime is invalid")
    forbidden = _outcome("fhirServer is not a watched FHIR server on the client's allowlist")
    media = _outcome("The body is not JSON (Content-Type)")

    def body(component: str) -> dict[str, Any]:
        return {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
        }

    return {
        "/watch/api/patients": {
            "get": {
                "tags": ["watch"],
                "summary": "The watched patients, most urgent first",
                "description": "Every enrolled patient on the caller's watched FHIR servers: IEC-HS status "
                "and grade, day after infusion, last evaluation and last change (status or grade rise).",
                "security": _CLIENT_JWT,
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/WatchPatients"}, "The watch list"),
                    "401": unauthorized,
                },
            }
        },
        "/watch/api/enroll": {
            "post": {
                "tags": ["watch"],
                "summary": "Watch a patient",
                "description": "Enrols the patient of a watched FHIR server (CDS_WATCH_SERVERS_FILE) that "
                "is also on the client's allowlist. Stores the patient id, the server and the infusion "
                "instant only. 201 when newly watched, 200 when already watched.",
                "security": _CLIENT_JWT,
                "requestBody": body("WatchEnrollment"),
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/WatchPatient"}, "Already watched"),
                    "201": _json({"$ref": "#/components/schemas/WatchPatient"}, "Now watched"),
                    "400": invalid,
                    "401": unauthorized,
                    "403": forbidden,
                    "415": media,
                },
            }
        },
        "/watch/api/unenroll": {
            "post": {
                "tags": ["watch"],
                "summary": "Stop watching a patient",
                "description": "The patient leaves the watch list (and is not enrolled again by hook calls "
                "for the same infusion).",
                "security": _CLIENT_JWT,
                "requestBody": body("WatchTarget"),
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/WatchLeft"}, "No longer watched"),
                    "400": invalid,
                    "401": unauthorized,
                    "403": forbidden,
                    "404": _outcome("The patient is not on the watch list"),
                    "415": media,
                },
            }
        },
        "/watch/notify/{token}": {
            "post": {
                "tags": ["watch"],
                "summary": "Rest-hook Subscription notifications from a watched FHIR server",
                "description": "The URL the watcher gives its Subscriptions (R4 backport). The FHIR server "
                "sends the Subscription's bearer secret; the patient becomes due and is polled with the "
                "watcher's own token. 404 for an unknown token or a wrong secret.",
                "parameters": [
                    {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/fhir+json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {"description": "Accepted (handshake, heartbeat or event)"},
                    "404": {"description": "Unknown Subscription or wrong secret"},
                    "413": {"description": "Body too large"},
                },
            }
        },
        "/watch/": {
            "get": {
                "tags": ["watch"],
                "summary": "Redirects to the worklist page (/smart/worklist)",
                "responses": {"302": {"description": "Redirect"}},
            }
        },
        "/watch/static/{filename}": {
            "get": {
                "tags": ["watch"],
                "summary": "Static files of the worklist page",
                "parameters": [
                    {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "The file"}, "404": _outcome("No such file")},
            }
        },
        "/smart/worklist": {
            "get": html_page(
                "The worklist: every watched patient, most urgent first; refreshes itself",
                "Behind the SMART sign-in of the dashboard (a sign-in page without one); open in development "
                "mode.",
                "watch",
            )
        },
        "/smart/worklist/open/{entry_id}": {
            "get": {
                "tags": ["watch"],
                "summary": "Open a watched patient's dashboard (the URL names the watch entry, never the "
                "patient)",
                "parameters": [
                    {"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "302": {"description": "Sign in first (standalone launch on the patient's FHIR server)"},
                    "303": {"description": "To the dashboard"},
                    "403": text_response("text/html", "The sign-in is locked to another patient"),
                    "404": text_response("text/html", "Not on the watch list"),
                },
            }
        },
    }
