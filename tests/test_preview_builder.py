"""The preview's request builder (POST /preview/hook-request), its date re-basing, and the development-only
evaluation-instant header: a scenario sent the way the page sends it gets exactly the cards the service
gives that patient at the scenario's instant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.hooks.validation import errors as schema_errors
from cds_service.preview.clock import HEADER
from cds_service.preview.rebase import day_shift_for, rebase, shift_datetime, shift_for
from cds_service.preview.scenarios import find_scenario, list_scenarios
from cds_service.preview.views import MAX_BUILD_BYTES
from tests.cds_helpers import dev_config, without_uuids

SERVICES = {"patient-view": "iec-hs-screening", "order-select": "iec-hs-order-select"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(dev_config(tmp_path_factory.mktemp("preview")))


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def build(client: FlaskClient, **body: Any) -> dict[str, Any]:
    response = client.post("/preview/hook-request", json=body)
    assert response.status_code == 200, response.get_json()
    built: dict[str, Any] = response.get_json()
    return built


def test_a_scenario_becomes_a_full_prefetch_patient_view_request(client: FlaskClient) -> None:
    built = build(client, hook="patient-view", scenario="classic-iec-hs")
    assert built["serviceId"] == "iec-hs-screening"
    assert built["evaluationInstant"] == "2026-03-15T20:00:00Z" and built["shiftedBy"] is None
    request = built["request"]
    assert schema_errors("cds-request", request) == []
    assert request["context"]["patientId"] == "classic-iec-hs"
    prefetch = request["prefetch"]
    bundle = find_scenario("classic-iec-hs").bundle()  # type: ignore[union-attr]
    counts: dict[str, int] = {}
    for entry in bundle["entry"]:
        counts[entry["resource"]["resourceType"]] = counts.get(entry["resource"]["resourceType"], 0) + 1
    assert prefetch["patient"]["resourceType"] == "Patient"
    assert prefetch["observations"]["total"] == counts["Observation"]
    assert prefetch["medicationAdministrations"]["total"] == counts["MedicationAdministration"]
    assert prefetch["procedures"] == {"resourceType": "Bundle", "type": "searchset", "total": 0}


def test_order_hooks_carry_a_draft_of_the_chosen_drug(client: FlaskClient) -> None:
    built = build(client, hook="order-select", scenario="classic-iec-hs", drug="anakinra")
    context = built["request"]["context"]
    draft = context["draftOrders"]["entry"][0]["resource"]
    assert draft["medicationCodeableConcept"]["coding"][0]["code"] == "72435"
    assert draft["authoredOn"] == "2026-03-15"  # the evaluation instant's day, not today
    assert context["selections"] == [f"MedicationRequest/{draft['id']}"]
    signed = build(client, hook="order-sign", scenario="classic-iec-hs", drug="siltuximab")["request"]
    assert "selections" not in signed["context"]
    assert (
        "coding" not in signed["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    )


@pytest.mark.parametrize("scenario", [s.name for s in list_scenarios()])
def test_the_page_gets_the_cards_of_the_scenario_instant(
    tmp_path: Path, client: FlaskClient, scenario: str
) -> None:
    """Through the header, exactly the response of an app whose clock is pinned to `at`."""
    known = find_scenario(scenario)
    assert known is not None
    pinned = create_app(dev_config(tmp_path, CLOCK=lambda: known.at)).test_client()
    for hook, service in SERVICES.items():
        built = build(client, hook=hook, scenario=scenario, drug="tocilizumab")
        body = json.dumps(built["request"])
        headers = {HEADER: built["evaluationInstant"], "Content-Type": "application/json"}
        via_page = client.post(f"/cds-services/{service}", data=body, headers=headers)
        direct = pinned.post(f"/cds-services/{service}", data=body, content_type="application/json")
        assert via_page.status_code == direct.status_code == 200
        assert without_uuids(via_page.get_json()) == without_uuids(direct.get_json())


def test_classic_scenario_card(client: FlaskClient) -> None:
    built = build(client, hook="patient-view", scenario="classic-iec-hs")
    response = client.post(
        "/cds-services/iec-hs-screening", json=built["request"], headers={HEADER: built["evaluationInstant"]}
    )
    card = response.get_json()["cards"][0]
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("IEC-HS criteria met, grade 2")


def test_rebase_moves_the_scenario_to_now(client: FlaskClient) -> None:
    built = build(client, hook="patient-view", scenario="classic-iec-hs", rebase=True)
    assert built["evaluationInstant"] is None and built["shiftedBy"].startswith("+")
    infusion = next(
        entry["resource"]
        for entry in built["request"]["prefetch"]["medicationAdministrations"]["entry"]
        if "axicabtagene" in json.dumps(entry["resource"]).lower()
    )
    moved = datetime.fromisoformat(infusion["effectiveDateTime"])
    original = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 13 days 10 h before the scenario's instant
    assert abs((datetime.now(UTC) - moved) - (datetime(2026, 3, 15, 20, tzinfo=UTC) - original)) < timedelta(
        minutes=1
    )
    response = client.post("/cds-services/iec-hs-screening", json=built["request"])
    assert response.get_json()["cards"][0]["summary"].startswith("IEC-HS criteria met")


def test_a_pasted_bundle_uses_its_timestamp(client: FlaskClient) -> None:
    bundle = find_scenario("crs-only-early").bundle()  # type: ignore[union-attr]
    built = build(client, hook="patient-view", bundle=bundle)
    assert built["evaluationInstant"] == "2026-04-16T20:00:00Z"
    del bundle["timestamp"]
    assert build(client, hook="patient-view", bundle=bundle)["evaluationInstant"] is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"hook": "patient-view"}, 400, "exactly one of scenario or bundle"),
        ({"hook": "patient-view", "scenario": "x", "bundle": {}}, 400, "exactly one of scenario or bundle"),
        ({"hook": "encounter-start", "scenario": "classic-iec-hs"}, 400, "hook: expected one of"),
        ({"hook": "patient-view", "scenario": "no-such-scenario"}, 404, "no fixture scenario"),
        (
            {"hook": "order-sign", "scenario": "classic-iec-hs", "drug": "aspirin"},
            400,
            "drug: expected one of",
        ),
        ({"hook": "patient-view", "scenario": "classic-iec-hs", "rebase": "yes"}, 400, "rebase: expected"),
        ({"hook": "patient-view", "bundle": {"resourceType": "Patient"}}, 400, "expected a FHIR Bundle"),
        (
            {"hook": "patient-view", "bundle": {"resourceType": "Bundle", "entry": []}},
            400,
            "exactly one Patient",
        ),
        (
            {"hook": "patient-view", "bundle": {"resourceType": "Bundle", "entry": [{"resource": {}}]}},
            400,
            "exactly one Patient",
        ),
        (
            {
                "hook": "patient-view",
                "bundle": {
                    "resourceType": "Bundle",
                    "entry": [{"resource": {"resourceType": "Patient", "id": "a b"}}],
                },
            },
            400,
            "not a FHIR id",
        ),
        (
            {"hook": "patient-view", "bundle": {"resourceType": "Bundle", "entry": []}, "rebase": True},
            400,
            "rebase",
        ),
        ([1, 2], 400, "expected a JSON object"),
    ],
)
def test_bad_build_requests(client: FlaskClient, body: Any, status: int, message: str) -> None:
    response = client.post("/preview/hook-request", json=body)
    assert response.status_code == status
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert message in outcome["issue"][0]["diagnostics"]


def test_the_builder_needs_json(client: FlaskClient) -> None:
    assert client.post("/preview/hook-request", data="x", content_type="text/plain").status_code == 415


# --- the evaluation-instant header --------------------------------------------------------------------


def test_the_header_is_validated_in_development_mode(client: FlaskClient) -> None:
    built = build(client, hook="patient-view", scenario="classic-iec-hs")
    for bad in ("", "yesterday", "2026-03-15T20:00:00", "1800-01-01T00:00:00Z"):
        response = client.post("/cds-services/iec-hs-screening", json=built["request"], headers={HEADER: bad})
        assert response.status_code == 400, bad
        assert HEADER in response.get_json()["issue"][0]["diagnostics"]


def production_app(tmp_path: Path, **extra: Any) -> Flask:
    """Production mode with the example trusted clients (no JWT of ours would verify)."""
    return create_app(
        dev_config(
            tmp_path,
            CDS_DEV_MODE=False,
            CDS_PUBLIC_BASE_URL="https://cds.example.org",
            CDS_TRUSTED_CLIENTS_FILE=str(PROJECT_ROOT / "config" / "trusted-clients.example.json"),
            **extra,
        )
    )


def test_the_builder_is_off_in_production_unless_configured(tmp_path: Path) -> None:
    """Issue 18 item 5: an anonymous CPU cost (~2.3 s per 18 MB body) is not served in production by
    default; it answers 404 before reading the body."""
    client = production_app(tmp_path).test_client()
    response = client.post(
        "/preview/hook-request", json={"hook": "patient-view", "scenario": "classic-iec-hs"}
    )
    assert response.status_code == 404
    assert "CDS_PREVIEW_BUILDER" in response.get_json()["issue"][0]["diagnostics"]
    enabled = production_app(tmp_path, CDS_PREVIEW_BUILDER=True).test_client()
    assert build(enabled, hook="patient-view", scenario="classic-iec-hs")["serviceId"] == "iec-hs-screening"


def test_the_builder_refuses_bodies_over_its_bound(client: FlaskClient) -> None:
    big = {
        "hook": "patient-view",
        "bundle": {"resourceType": "Bundle", "entry": [], "pad": "x" * MAX_BUILD_BYTES},
    }
    response = client.post("/preview/hook-request", json=big)
    assert response.status_code == 413
    assert response.get_json()["issue"][0]["code"] == "too-costly"


def test_the_builder_is_rate_limited_per_client(tmp_path: Path) -> None:
    client = create_app(dev_config(tmp_path, CDS_RATE_LIMIT="3/minute")).test_client()
    body = {"hook": "patient-view", "scenario": "classic-iec-hs"}
    statuses = [client.post("/preview/hook-request", json=body).status_code for _ in range(3)]
    refused = client.post("/preview/hook-request", json=body)
    other = client.post(
        "/preview/hook-request", json=body, environ_overrides={"REMOTE_ADDR": "127.0.0.2"}
    )  # another client has its own allowance
    assert statuses == [200, 200, 200] and other.status_code == 200
    assert refused.status_code == 429
    assert refused.get_json()["issue"][0]["code"] == "throttled"
    assert int(refused.headers["Retry-After"]) >= 1


def test_the_header_is_ignored_outside_development_mode(tmp_path: Path) -> None:
    production = production_app(tmp_path, CDS_PREVIEW_BUILDER=True)
    assert production.config["CLOCK"] is None
    client = production.test_client()
    built = build(client, hook="patient-view", scenario="classic-iec-hs")
    response = client.post("/cds-services/iec-hs-screening", json=built["request"], headers={HEADER: "x"})
    assert response.status_code == 401  # no JWT: refused before the header could matter


def test_an_injected_clock_is_left_alone(tmp_path: Path) -> None:
    def pinned() -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    assert create_app(dev_config(tmp_path, CLOCK=pinned)).config["CLOCK"] is pinned


# --- rebase helpers -----------------------------------------------------------------------------------


def test_rebase_shifts_complete_dates_and_keeps_their_form() -> None:
    at = datetime(2026, 3, 15, 20, 0, tzinfo=UTC)
    shift = shift_for(at, datetime(2026, 11, 24, 5, 30, 15, 999, tzinfo=UTC))
    assert shift == timedelta(days=253, hours=9, minutes=30, seconds=15)
    days = day_shift_for(at, shift)
    assert days == 254
    value = {
        "effectiveDateTime": "2026-03-15T18:11:00Z",
        "issued": "2026-03-15T19:01:00.120+01:00",
        "birthDate": "1968-04-02",
        "onset": "2026-03",
        "id": "classic-iec-hs-lab-ferritin-0012",
        "valueString": "2026-03-15T18:11Z",
    }
    moved = rebase(value, shift, days)
    assert moved["effectiveDateTime"] == "2026-11-24T03:41:15Z"
    assert moved["issued"] == "2026-11-24T04:31:15.120+01:00"
    assert moved["birthDate"] == "1968-12-12"
    assert moved["onset"] == "2026-03" and moved["id"] == value["id"]
    assert moved["valueString"] == "2026-11-24T03:41Z"
    assert shift_datetime("2026-13-40T00:00:00Z", shift) == "2026-13-40T00:00:00Z"
