"""Bad input through the app: size (413), media type (415), malformed or non-standard JSON (400), nesting
deeper than 64 levels (400 naming the path), wrong types anywhere in the CDS Hooks envelope (400 whose
OperationOutcome names the field), and bad FHIR content (200: the resource is excluded, and the same
evaluation's data-quality list on the dashboard's evidence view says which and why; the card names a gap
only when it decides something). Never a 500, never a stack trace."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from cds_service import create_app
from cds_service.hooks.request import MAX_JSON_DEPTH
from tests.cds_helpers import (
    assert_conformant,
    car_t_patient,
    dev_config,
    evidence_of,
    full_prefetch,
    hook_body,
)

SCREENING = "/cds-services/iec-hs-screening"
FEEDBACK = f"{SCREENING}/feedback"
PID = "bad-input-p1"
RESOURCES = car_t_patient(PID)
WEIGHT = next(
    r for r in RESOURCES if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "29463-7"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(dev_config(tmp_path_factory.mktemp("bad"), CDS_MAX_REQUEST_BYTES=1_000_000))


def post_raw(
    app: Flask, data: bytes, content_type: str | None = "application/json", path: str = SCREENING
) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    response = app.test_client().post(path, data=data, headers=headers)
    assert response.status_code < 500
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and ".py" not in text
    return response


def outcome(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return dict(body["issue"][0])


def valid() -> dict[str, Any]:
    return hook_body("patient-view", PID, prefetch=full_prefetch(RESOURCES))


# ------------------------------------------------------------------------------ transport-level limits


def test_a_body_over_the_limit_is_413(app: Flask) -> None:
    response = post_raw(app, b'{"hook": "' + b"x" * 1_100_000 + b'"}')
    assert response.status_code == 413 and outcome(response)["code"] == "too-costly"


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]
)
def test_non_json_media_types_are_415(app: Flask, content_type: str | None) -> None:
    for path in (SCREENING, FEEDBACK):
        response = post_raw(app, json.dumps(valid()).encode(), content_type, path)
        assert response.status_code == 415 and outcome(response)["code"] == "not-supported"


def test_fhir_json_media_type_is_accepted(app: Flask) -> None:
    assert post_raw(app, json.dumps(valid()).encode(), "application/fhir+json").status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"{not json",
        b'{"hook": NaN}',
        b'{"hook": Infinity}',
        b'{"hook": -Infinity}',
        b'{"n": 1e400}',  # beyond a double
        b'{"hook": "\\ud800"}',  # a lone surrogate
        b'{"hook": "\\udc00x"}',
        b'{"hook": "\xff\xfe"}',  # invalid UTF-8
        b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
        b'{"a": 1} trailing',
        b"[1, 2,]",
        b"{'hook': 'single quotes'}",
    ],
)
def test_malformed_json_is_400(app: Flask, data: bytes) -> None:
    for path in (SCREENING, FEEDBACK):
        response = post_raw(app, data, path=path)
        assert response.status_code == 400
        assert outcome(response)["code"] == "invalid"
        assert outcome(response)["diagnostics"].startswith("malformed JSON")


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"x": value}
    return value


def test_nesting_depth_is_limited(app: Flask) -> None:
    """64 nested objects/arrays in total are accepted; one more is a 400 naming where it happened."""
    ok = valid()
    ok["extension"] = nested(MAX_JSON_DEPTH - 1)  # the envelope itself is the first level
    assert post_raw(app, json.dumps(ok).encode()).status_code == 200
    too_deep = valid()
    too_deep["extension"] = nested(MAX_JSON_DEPTH)
    response = post_raw(app, json.dumps(too_deep).encode())
    assert response.status_code == 400
    issue = outcome(response)
    assert issue["diagnostics"] == "JSON nested deeper than 64 levels"
    assert issue["expression"] == ["extension" + ".x" * (MAX_JSON_DEPTH - 1)]
    arrays = post_raw(app, b"[" * 1000 + b"]" * 1000, path=FEEDBACK)  # orjson's own limit is 1024
    assert arrays.status_code == 400


# ------------------------------------------------------------------------------ the CDS Hooks envelope


def change(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or, for value is DELETE, remove) the dotted `path` in a request body."""

    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return apply


DELETE = object()
TOKEN = {"access_token": "t", "token_type": "Bearer", "expires_in": 60, "scope": "s", "subject": "c"}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda body: body.clear(), "hook"),
        (change("hook", 42), "hook"),
        (change("hook", ""), "hook"),
        (change("hook", "order-sign"), "hook"),  # not served by this id
        (change("hookInstance", {"a": 1}), "hookInstance"),
        (change("hookInstance", "x" * 300), "hookInstance"),
        (change("context", []), "context"),
        (change("context", None), "context"),
        (change("context.patientId", 12345), "context.patientId"),
        (change("context.patientId", "../Patient/1"), "context.patientId"),
        (change("context.patientId", "p\u0000"), "context.patientId"),
        (change("context.patientId", "\u202ep1"), "context.patientId"),
        (change("context.patientId", "\U0001f600"), "context.patientId"),
        (change("context.userId", "Device/1"), "context.userId"),
        (change("context.userId", DELETE), "context.userId"),
        (change("prefetch", []), "prefetch"),
        (change("prefetch.patient", "Patient/1"), "prefetch.patient"),
        (change("prefetch.patient", 1.5), "prefetch.patient"),
        (change("prefetch.observations", {"entry": []}), "prefetch.observations.resourceType"),
        (change("prefetch.observations.resourceType", 7), "prefetch.observations.resourceType"),
        (change("fhirServer", 443), "fhirServer"),
        (change("fhirServer", "javascript:alert(1)"), "fhirServer"),
        (change("fhirServer", "https://ehr example.org/fhir"), "fhirServer"),
        (change("fhirAuthorization", TOKEN), "fhirServer"),  # fhirAuthorization needs fhirServer
        (
            lambda body: body.update(fhirServer="https://ehr.example.org/fhir", fhirAuthorization="Bearer t"),
            "fhirAuthorization",
        ),
    ],
)
def test_wrong_envelope_types_are_400_naming_the_field(app: Flask, mutate: Any, field: str) -> None:
    body = valid()
    mutate(body)
    response = post_raw(app, json.dumps(body).encode())
    assert response.status_code == 400
    issue = outcome(response)
    assert issue["expression"] == [field], issue


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({**TOKEN, "expires_in": "60"}, "fhirAuthorization.expires_in"),
        ({**TOKEN, "expires_in": -1}, "fhirAuthorization.expires_in"),
        ({**TOKEN, "expires_in": 1.5}, "fhirAuthorization.expires_in"),
        ({**TOKEN, "access_token": 12}, "fhirAuthorization.access_token"),
        ({**TOKEN, "token_type": "MAC"}, "fhirAuthorization.token_type"),
        ({k: v for k, v in TOKEN.items() if k != "subject"}, "fhirAuthorization.subject"),
    ],
)
def test_bad_fhir_authorization_is_400_naming_the_field(app: Flask, value: Any, field: str) -> None:
    body = {**valid(), "fhirServer": "https://ehr.example.org/fhir", "fhirAuthorization": value}
    response = post_raw(app, json.dumps(body).encode())
    assert response.status_code == 400 and outcome(response)["expression"] == [field]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (
            {"card": 1, "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:00:00Z"},
            "feedback[0].card",
        ),
        (
            {"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-11-24T00:00:00Z"},
            "feedback[0].outcome",
        ),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
            "feedback[0].outcomeTimestamp",
        ),
        ({"card": "c", "outcome": "overridden", "outcomeTimestamp": 1e300}, "feedback[0].outcomeTimestamp"),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-02-30T25:61:00Z"},
            "feedback[0].outcomeTimestamp",
        ),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "0001-01-01T00:00:00+14:00"},
            "feedback[0].outcomeTimestamp",
        ),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:00:00+25:00"},
            "feedback[0].outcomeTimestamp",
        ),
    ],
)
def test_bad_feedback_is_400_naming_the_field(app: Flask, item: dict[str, Any], field: str) -> None:
    response = post_raw(app, json.dumps({"feedback": [item]}).encode(), path=FEEDBACK)
    assert response.status_code == 400 and outcome(response)["expression"] == [field]


# ------------------------------------------------------------------------------ bad FHIR content


def weight(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda obs: obs.update(changes)


def quantity(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda obs: obs["valueQuantity"].update(changes)


@pytest.mark.parametrize(
    ("mutate", "note"),
    [
        (quantity(value="72"), "valueQuantity.value is not a finite number"),
        (quantity(value=1e308), "valueQuantity.value is not a finite number"),
        (quantity(value=10**30), "valueQuantity.value is not a finite number"),
        (quantity(value=None), "valueQuantity.value is not a finite number"),
        (quantity(unit="furlong", code="furlong"), "'furlong' is not a valid UCUM unit"),
        (quantity(code="\U0001f600", unit="\u202ekg"), "has characters a UCUM unit cannot have"),
        (weight(valueQuantity=[72]), "no numeric valueQuantity"),
        (weight(valueQuantity="72 kg"), "no numeric valueQuantity"),
        (weight(effectiveDateTime="2999-01-01T00:00:00Z"), "dated in the future"),
        (weight(effectiveDateTime="2026-13-45T99:00:00Z"), "no usable effective time"),
        (weight(effectiveDateTime=20261124), "no usable effective time"),
        (weight(effectiveDateTime="\ud7ff\ue000"), "no usable effective time"),
    ],
)
def test_bad_resources_are_excluded_and_reported(
    app: Flask, mutate: Callable[[dict[str, Any]], None], note: str
) -> None:
    resources = copy.deepcopy(RESOURCES)
    mutate(next(r for r in resources if r["id"] == WEIGHT["id"]))
    body = hook_body("patient-view", PID, prefetch=full_prefetch(resources))
    response = post_raw(app, json.dumps(body).encode())
    assert response.status_code == 200
    assert_conformant(response.get_json())
    # Still visible to a person: on the data-quality list of the evidence behind the card (the weight
    # decides no IEC-HS criterion, so the card itself names no gap for it).
    quality = evidence_of(app.test_client(), "iec-hs-screening", body).split("Data quality")[1]
    assert f"Observation/{WEIGHT['id']}" in quality and note in quality and "excluded" in quality
    card = response.get_json()["cards"][0]
    assert WEIGHT["id"] not in card.get("detail", "")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda resources: resources[0].update(birthDate="19x8"),
        lambda resources: resources[0].update(birthDate="2999-01-01"),
        lambda resources: resources[0].update(name=5, gender=["x"], id=7),
        lambda resources: resources[1].update(code=[], subject="Patient/x", status=5),
        lambda resources: resources.append({"resourceType": "Observation"}),
        lambda resources: resources.append({"resourceType": "Observation", "code": {"coding": "2276-4"}}),
        lambda resources: resources.append({"resourceType": "Unknown", "id": "u"}),
        lambda resources: [r.update(id="\u0000\u202e") for r in resources[1:]],
    ],
)
def test_odd_resources_never_break_the_answer(
    app: Flask, mutate: Callable[[list[dict[str, Any]]], None]
) -> None:
    resources = copy.deepcopy(RESOURCES)
    mutate(resources)
    body = hook_body("patient-view", PID, prefetch=full_prefetch(resources))
    response = post_raw(app, json.dumps(body).encode())
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert_conformant(response.get_json())


def test_draft_orders_with_wrong_types(app: Flask) -> None:
    body = hook_body(
        "order-select",
        PID,
        prefetch=full_prefetch(RESOURCES),
        selections=["MedicationRequest/x"],
        draftOrders={
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "MedicationRequest",
                        "medicationCodeableConcept": {"coding": "x"},
                        "dosageInstruction": "daily",
                    }
                }
            ],
        },
    )
    response = post_raw(app, json.dumps(body).encode(), path="/cds-services/iec-hs-order-select")
    assert response.status_code == 200
    assert_conformant(response.get_json())


@pytest.mark.parametrize(
    ("resource_type", "changes"),
    [
        ("Observation", {"status": ["final"]}),
        ("Observation", {"status": {"code": "final"}}),
        ("Observation", {"valueQuantity": {"value": 5, "unit": "Cel", "code": "Cel"}}),  # offset unit
        ("MedicationAdministration", {"status": ["completed"]}),
        ("MedicationRequest", {"intent": {"x": 1}}),
        ("Procedure", {"status": []}),
    ],
)
def test_unhashable_or_offset_values_found_by_fuzzing(
    app: Flask, resource_type: str, changes: dict[str, Any]
) -> None:
    """Regressions: each of these was a 500 (unhashable status/intent, pint offset-unit arithmetic)."""
    resources = copy.deepcopy(RESOURCES)
    extra = {
        "resourceType": resource_type,
        "id": "fuzzed",
        "status": "completed",
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2571-8"}]},
        "effectiveDateTime": RESOURCES[3]["effectiveDateTime"],
        "performedDateTime": RESOURCES[3]["effectiveDateTime"],
        "authoredOn": RESOURCES[3]["effectiveDateTime"],
        "medicationCodeableConcept": {"text": "tocilizumab"},
        **changes,
    }
    body = hook_body("patient-view", PID, prefetch=full_prefetch([*resources, extra]))
    response = post_raw(app, json.dumps(body).encode())
    assert response.status_code == 200
    assert_conformant(response.get_json())
