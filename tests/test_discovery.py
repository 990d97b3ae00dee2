"""Discovery: generated from the one registry, STU2-shaped, prefetch templates that ask for what the engine
reads (every LOINC code of mappings/analytes.yaml), and no network work."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml
from flask import Flask

from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine.knowledge import load_knowledge
from cds_service.hooks.prefetch_tokens import TODAY, check_template, tokens
from cds_service.hooks.services import build_registry
from cds_service.hooks.validation import errors as schema_errors
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config

EXPECTED = {
    "iec-hs-screening": "patient-view",
    "iec-hs-order-select": "order-select",
    "iec-hs-order-sign": "order-sign",
}


class NoNetworkSession(requests.Session):
    """A session that fails the test if anything tries to use it (discovery must not touch the network)."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        raise AssertionError("discovery made a network call")


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(dev_config(tmp_path, HTTP_SESSION=NoNetworkSession()))


@pytest.fixture
def discovery(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/cds-services")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document: dict[str, Any] = response.get_json()
    return document


def test_discovery_equals_the_registry(app: Flask, discovery: dict[str, Any]) -> None:
    assert discovery == get_state(app).registry.discovery()
    assert discovery == build_registry(load_knowledge()).discovery()


def test_discovery_is_schema_valid_and_lists_the_three_services(discovery: dict[str, Any]) -> None:
    assert schema_errors("discovery", discovery) == []
    assert {s["id"]: s["hook"] for s in discovery["services"]} == EXPECTED
    for service in discovery["services"]:
        assert service["title"] and service["description"] and "name" not in service


def test_every_service_routes_to_its_registry_entry(app: Flask, discovery: dict[str, Any]) -> None:
    registry = get_state(app).registry
    for service in discovery["services"]:
        assert registry.find(service["id"], service["hook"]) is not None


def analytes_codes() -> set[str]:
    data = yaml.safe_load((PROJECT_ROOT / "mappings" / "analytes.yaml").read_text(encoding="utf-8"))
    return {str(code["code"]) for spec in data["analytes"].values() for code in spec["codes"]}


def test_observation_template_asks_for_every_loinc_code(discovery: dict[str, Any]) -> None:
    for service in discovery["services"]:
        query = parse_qs(urlsplit(service["prefetch"]["observations"]).query)
        codes = query["code"][0].split(",")
        assert len(codes) == len(set(codes))
        assert {c.removeprefix("http://loinc.org|") for c in codes} == analytes_codes()
        assert all(c.startswith("http://loinc.org|") for c in codes)
        assert query["patient"] == ["{{context.patientId}}"]
        assert query["_sort"] == ["-date"] and int(query["_count"][0]) >= 100


def test_templates_ask_for_what_the_engine_reads(discovery: dict[str, Any]) -> None:
    for service in discovery["services"]:
        prefetch = service["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert prefetch["conditions"] == "Condition?patient={{context.patientId}}"
        assert prefetch["procedures"] == "Procedure?patient={{context.patientId}}"
        assert (
            prefetch["medicationAdministrations"] == "MedicationAdministration?patient={{context.patientId}}"
        )
        assert prefetch["medicationRequests"] == "MedicationRequest?patient={{context.patientId}}"


def test_templates_use_only_stu2_tokens(discovery: dict[str, Any]) -> None:
    """today() is 3.0-ballot content that STU2 clients do not expand: it must not be in the contract."""
    for service in discovery["services"]:
        for template in service["prefetch"].values():
            check_template(template)
            assert not any(TODAY.fullmatch(token) for token in tokens(template))
            assert "date=" not in template


def test_required_keys(app: Flask) -> None:
    for service in get_state(app).registry.services:
        assert service.required_keys == {"patient", "observations"}


def test_discovery_rejects_other_methods_and_answers_preflight(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/cds-services", json={}).status_code == 405
    assert client.delete("/cds-services").status_code == 405
    preflight = client.options("/cds-services", headers={"Origin": "http://127.0.0.1:3000"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == "*"
