"""Hook request validation: 400/404/405/413/415 with an OperationOutcome naming the bad field, hook
dispatch, and lenient parsing of the CDS Hooks Sandbox's non-conformant draftOrders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.errors import InvalidRequest
from cds_service.hooks.pipeline import InvalidResponse, check_response
from cds_service.hooks.request import parse_hook_request
from cds_service.web.state import get_state
from tests.cds_helpers import (
    assert_conformant,
    car_t_patient,
    dev_config,
    full_prefetch,
    hook_body,
    sandbox_draft_orders,
)

SCREENING = "/cds-services/iec-hs-screening"
ORDER_SELECT = "/cds-services/iec-hs-order-select"
ORDER_SIGN = "/cds-services/iec-hs-order-sign"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(dev_config(tmp_path))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def outcome_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = body["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"]
    return issue


def valid_body() -> dict[str, Any]:
    return hook_body("patient-view", "p1", prefetch={"patient": None, "observations": None})


def order_body(hook: str = "order-select") -> dict[str, Any]:
    extra: dict[str, Any] = {"draftOrders": sandbox_draft_orders("p1")}
    if hook == "order-select":
        extra["selections"] = ["MedicationRequest/request-123"]
    return hook_body(hook, "p1", prefetch={"patient": None, "observations": None}, **extra)


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def replaced(body: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def test_unknown_service_is_404(client: FlaskClient) -> None:
    issue = outcome_of(client.post("/cds-services/no-such-service", json=valid_body()), 404)
    assert issue["code"] == "not-found"
    outcome_of(client.post("/cds-services/no-such-service/feedback", json={"feedback": []}), 404)


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_405(client: FlaskClient, method: str) -> None:
    response = getattr(client, method)(SCREENING)
    issue = outcome_of(response, 405)
    assert issue["code"] == "not-supported"
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("hook=patient-view", "application/x-www-form-urlencoded"), ("{}", "text/plain"), ("{}", None)],
)
def test_non_json_is_415(client: FlaskClient, data: str, content_type: str | None) -> None:
    issue = outcome_of(client.post(SCREENING, data=data, content_type=content_type), 415)
    assert issue["code"] == "not-supported"


def test_json_media_types_with_parameters_are_accepted(client: FlaskClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/fhir+json"):
        response = client.post(SCREENING, data=b'{"hook": 1}', content_type=content_type)
        assert response.status_code == 400  # parsed as JSON, then rejected by the schema


@pytest.mark.parametrize("data", [b"{", b"", b"[1,", b'{"hook": "patient-view",}', b"\xff\xfe"])
def test_malformed_json_is_400(client: FlaskClient, data: bytes) -> None:
    issue = outcome_of(client.post(SCREENING, data=data, content_type="application/json"), 400)
    assert issue["code"] == "invalid" and "malformed JSON" in issue["diagnostics"]


def test_oversized_request_is_413(tmp_path: Path) -> None:
    client = create_app(dev_config(tmp_path, CDS_MAX_REQUEST_BYTES=1024)).test_client()
    body = replaced(valid_body(), {"resourceType": "Patient", "text": "x" * 2000}, "prefetch", "patient")
    outcome_of(client.post(SCREENING, json=body), 413)


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("not an object", [valid_body()], ""),  # type: ignore[list-item]
    ("no hook", without(valid_body(), "hook"), "hook"),
    ("no hookInstance", without(valid_body(), "hookInstance"), "hookInstance"),
    ("no context", without(valid_body(), "context"), "context"),
    ("no patientId", without(valid_body(), "context", "patientId"), "context.patientId"),
    ("no userId", without(valid_body(), "context", "userId"), "context.userId"),
    ("patientId a number", replaced(valid_body(), 42, "context", "patientId"), "context.patientId"),
    ("patientId with a slash", replaced(valid_body(), "../x", "context", "patientId"), "context.patientId"),
    ("userId not a reference", replaced(valid_body(), "dr-1", "context", "userId"), "context.userId"),
    ("hookInstance a number", replaced(valid_body(), 7, "hookInstance"), "hookInstance"),
    ("context an array", replaced(valid_body(), [], "context"), "context"),
    ("prefetch an array", replaced(valid_body(), [], "prefetch"), "prefetch"),
    (
        "prefetch value a string",
        replaced(valid_body(), "Patient/1", "prefetch", "patient"),
        "prefetch.patient",
    ),
    (
        "prefetch resource untyped",
        replaced(valid_body(), {"id": "1"}, "prefetch", "patient"),
        "prefetch.patient.resourceType",
    ),
    ("fhirServer not a URL", replaced(valid_body(), "ehr.example.org", "fhirServer"), "fhirServer"),
    (
        "fhirAuthorization without fhirServer",
        without(hook_body("patient-view", "p1", fhir_server="https://e.org", token="t"), "fhirServer"),
        "fhirServer",
    ),
    (
        "fhirAuthorization without access_token",
        without(
            hook_body("patient-view", "p1", fhir_server="https://e.org", token="t"),
            "fhirAuthorization",
            "access_token",
        ),
        "fhirAuthorization.access_token",
    ),
    (
        "token_type not Bearer",
        replaced(
            hook_body("patient-view", "p1", fhir_server="https://e.org", token="t"),
            "MAC",
            "fhirAuthorization",
            "token_type",
        ),
        "fhirAuthorization.token_type",
    ),
]


@pytest.mark.parametrize(("name", "body", "expression"), CASES, ids=[c[0] for c in CASES])
def test_invalid_requests_name_the_field(client: FlaskClient, name: str, body: Any, expression: str) -> None:
    issue = outcome_of(client.post(SCREENING, json=body), 400)
    assert issue["code"] == "invalid"
    if expression:
        assert issue["expression"] == [expression]
        assert issue["diagnostics"].startswith(f"{expression}: ")
    else:
        assert "expression" not in issue


ORDER_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("no selections", ORDER_SELECT, without(order_body(), "context", "selections"), "context.selections"),
    (
        "empty selections",
        ORDER_SELECT,
        replaced(order_body(), [], "context", "selections"),
        "context.selections",
    ),
    (
        "no draftOrders",
        ORDER_SIGN,
        without(order_body("order-sign"), "context", "draftOrders"),
        "context.draftOrders",
    ),
    (
        "draftOrders not a Bundle",
        ORDER_SIGN,
        replaced(order_body("order-sign"), "Patient", "context", "draftOrders", "resourceType"),
        "context.draftOrders.resourceType",
    ),
    (
        "draftOrders entry untyped",
        ORDER_SELECT,
        replaced(order_body(), [{"resource": {"id": "x"}}], "context", "draftOrders", "entry"),
        "context.draftOrders.entry[0].resource.resourceType",
    ),
]


@pytest.mark.parametrize(("name", "path", "body", "expression"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_invalid_order_contexts_name_the_field(
    client: FlaskClient, name: str, path: str, body: dict[str, Any], expression: str
) -> None:
    issue = outcome_of(client.post(path, json=body), 400)
    assert issue["expression"] == [expression]


@pytest.mark.parametrize(
    ("path", "hook"),
    [
        (SCREENING, "order-sign"),
        (ORDER_SELECT, "patient-view"),
        (ORDER_SIGN, "order-select"),
        (SCREENING, "encounter-start"),
    ],
)
def test_a_hook_not_served_by_the_id_is_400(client: FlaskClient, path: str, hook: str) -> None:
    issue = outcome_of(client.post(path, json=replaced(valid_body(), hook, "hook")), 400)
    assert issue["expression"] == ["hook"]
    assert "serves" in issue["diagnostics"]


def test_sandbox_draft_orders_parse_leniently(app: Flask) -> None:
    """The sandbox sends a Bundle without type and a MedicationRequest without intent, category an object."""
    import orjson

    registry = get_state(app).registry
    request, service = parse_hook_request(
        registry, "iec-hs-order-select", orjson.dumps(order_body()), "application/json"
    )
    assert service.hook == "order-select"
    assert request.selections == ["MedicationRequest/request-123"]
    assert request.draft_orders["entry"][0]["resource"]["category"]["coding"][0]["code"] == "community"
    bare = replaced(order_body("order-sign"), {"resourceType": "Bundle"}, "context", "draftOrders")
    request, _ = parse_hook_request(registry, "iec-hs-order-sign", orjson.dumps(bare), "application/json")
    assert request.selections is None and request.draft_orders == {"resourceType": "Bundle"}


def test_unknown_members_and_extensions_are_ignored(app: Flask) -> None:
    import orjson

    body = valid_body()
    body["extension"] = {"org.example.flag": True}
    body["context"]["extension"] = {"org.example.ward": "7B"}
    body["somethingNew"] = 1
    parse_hook_request(get_state(app).registry, "iec-hs-screening", orjson.dumps(body), "application/json")


def test_parse_errors_are_invalid_request(app: Flask) -> None:
    with pytest.raises(InvalidRequest):
        parse_hook_request(get_state(app).registry, "iec-hs-screening", b"{}", "application/json")


def test_sandbox_order_hooks_answer_200(client: FlaskClient) -> None:
    resources = car_t_patient("p-orders")
    prefetch = full_prefetch(resources)
    for path, hook in ((ORDER_SELECT, "order-select"), (ORDER_SIGN, "order-sign")):
        body = order_body(hook)
        body["context"]["patientId"] = "p-orders"
        body["prefetch"] = prefetch
        response = client.post(path, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert_conformant(response.get_json())


def test_patient_view_with_full_prefetch_answers_200(client: FlaskClient) -> None:
    resources = car_t_patient("p-full")
    response = client.post(
        SCREENING, json=hook_body("patient-view", "p-full", prefetch=full_prefetch(resources))
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_conformant(response.get_json())


def test_responses_are_checked_against_the_schema() -> None:
    check_response({"cards": []})
    with pytest.raises(InvalidResponse):
        check_response({"cards": [{"summary": "x" * 140, "indicator": "info", "source": {"label": "s"}}]})
    with pytest.raises(InvalidResponse):
        check_response({"cards": [{"summary": "s", "indicator": "hard-stop", "source": {"label": "s"}}]})


def test_a_nonconforming_response_is_a_generic_500(tmp_path: Path) -> None:
    client = create_app(dev_config(tmp_path, UUID_FACTORY=lambda: "")).test_client()  # empty uuids break STU2
    resources = car_t_patient("p-bad")
    response = client.post(
        SCREENING, json=hook_body("patient-view", "p-bad", prefetch=full_prefetch(resources))
    )
    assert response.status_code == 500
    assert response.get_json()["issue"][0]["diagnostics"] == "internal error"
