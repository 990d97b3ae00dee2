"""The app factory: start-up validation, extension points, request ids, logging, errors, CORS, auth."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Request

import cds_service
from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.errors import ConfigurationError, DataFileError, Unauthorized
from cds_service.web.observability import JsonFormatter
from cds_service.web.security import (
    ClientIdentity,
    dev_fhir_server_policy,
    https_only_policy,
    is_loopback_host,
)
from tests.cds_helpers import dev_config, hook_body

PROD = {"CDS_DEV_MODE": False, "CDS_PUBLIC_BASE_URL": "https://cds.example.org"}


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the JSON line the service writes (extra fields included)."""
    return "\n".join(JsonFormatter().format(record) for record in caplog.records)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(dev_config(tmp_path))


def prod_app(tmp_path: Path, **extra: Any) -> Flask:
    return create_app(dev_config(tmp_path, **PROD, **extra))


def test_factory_builds_a_fresh_app_each_time(tmp_path: Path) -> None:
    first, second = create_app(dev_config(tmp_path)), create_app(dev_config(tmp_path))
    assert first is not second
    assert cds_service.create_app is create_app
    assert {"cds", "health"} <= set(first.blueprints)


def test_healthz_reports_the_version(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": cds_service.__version__, "mode": "development"}


def test_a_bad_mappings_file_fails_at_start(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", mappings)
    analytes = mappings / "analytes.yaml"
    analytes.write_text(analytes.read_text().replace("canonical_unit: ng/mL", "canonical_unit: 12", 1))
    with pytest.raises(DataFileError) as caught:
        create_app(dev_config(tmp_path, MAPPINGS_DIR=mappings))
    assert "analytes.yaml" in str(caught.value)


def test_bad_settings_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CDS_PUBLIC_BASE_URL"):
        create_app(dev_config(tmp_path, CDS_DEV_MODE=False))


def test_extension_point_defaults(tmp_path: Path) -> None:
    dev, prod = create_app(dev_config(tmp_path)), prod_app(tmp_path)
    assert dev.config["FHIR_SERVER_POLICY"] is dev_fhir_server_policy
    assert prod.config["FHIR_SERVER_POLICY"] is https_only_policy
    assert dev.config["MAX_CONTENT_LENGTH"] == 20 * 1024 * 1024
    assert callable(dev.config["UUID_FACTORY"]) and callable(prod.config["CLIENT_AUTH"])


def test_request_id_is_generated_or_echoed(app: Flask) -> None:
    client = app.test_client()
    generated = client.get("/cds-services").headers["X-Request-Id"]
    assert len(generated) == 32
    assert (
        client.get("/cds-services", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    )
    unsafe = client.get("/cds-services", headers={"X-Request-Id": "a b\u00e9<script>"}).headers[
        "X-Request-Id"
    ]
    assert unsafe != "a b\u00e9<script>" and len(unsafe) == 32


def test_one_structured_log_line_per_request_without_phi(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    body = hook_body(
        "patient-view", "secret-patient-42", fhir_server="https://ehr.invalid/fhir", token="tok-xyz"
    )
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = app.test_client().post("/cds-services/iec-hs-screening", json=body)
    assert response.status_code == 412  # the FHIR server does not resolve
    lines = [r for r in caplog.records if r.name == "cds_service.access"]
    assert len(lines) == 1
    line = lines[0].__dict__
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert line["endpoint"] == "/cds-services/<service_id>"
    assert (line["hook"], line["service_id"], line["status"]) == ("patient-view", "iec-hs-screening", 412)
    assert {"parse", "prefetch"} <= set(line["phases"])
    text = logged(caplog)
    assert line["prefetch_unavailable"] == ["patient", "observations"]
    assert all(s not in text for s in ("secret-patient-42", "tok-xyz", "ehr.invalid"))


def test_unexpected_errors_are_a_generic_outcome(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(dev_config(tmp_path))

    def explode() -> str:
        raise RuntimeError("ferritin 9800 for patient Jane Doe")

    app.add_url_rule("/explode", view_func=explode)
    with caplog.at_level(logging.ERROR, logger="cds_service"):
        response = app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.get_json() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": "internal error"}],
    }
    assert "Jane Doe" not in logged(caplog) and '"error_type":"RuntimeError"' in logged(caplog)


def test_oversized_body_is_413_with_an_outcome(tmp_path: Path) -> None:
    app = create_app(dev_config(tmp_path, CDS_MAX_REQUEST_BYTES=2000))
    body = hook_body("patient-view", "p1", prefetch={"patient": {"resourceType": "Patient", "x": "y" * 3000}})
    response = app.test_client().post("/cds-services/iec-hs-screening", json=body)
    assert response.status_code == 413
    assert response.get_json()["issue"][0]["code"] == "too-costly"


def test_production_default_refuses_clients_without_detail(tmp_path: Path) -> None:
    client = prod_app(tmp_path).test_client()
    for response in (
        client.get("/cds-services"),
        client.post("/cds-services/iec-hs-screening", json={}),
        client.post("/cds-services/iec-hs-screening/feedback", json={}),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.get_json()["issue"][0]["diagnostics"] == "authentication required"


def test_client_auth_gets_the_exact_endpoint_as_audience(tmp_path: Path) -> None:
    seen: list[str] = []

    def auth(request: Request, expected_aud: str) -> ClientIdentity:
        seen.append(expected_aud)
        if request.headers.get("Authorization") != "Bearer good":
            raise Unauthorized("bad token")
        return ClientIdentity(issuer="https://ehr.example.org")

    client = prod_app(tmp_path, CLIENT_AUTH=auth).test_client()
    assert client.get("/cds-services", headers={"Authorization": "Bearer good"}).status_code == 200
    assert client.get("/cds-services").status_code == 401
    client.post("/cds-services/iec-hs-screening/feedback", json={}, headers={"Authorization": "Bearer good"})
    assert seen == [
        "https://cds.example.org/cds-services",
        "https://cds.example.org/cds-services",
        "https://cds.example.org/cds-services/iec-hs-screening/feedback",
    ]


def test_preflight_needs_no_auth_and_respects_the_allowlist(tmp_path: Path) -> None:
    app = prod_app(tmp_path, CDS_CORS_ORIGINS="https://ehr.example.org")
    client = app.test_client()
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    for path in (
        "/cds-services",
        "/cds-services/iec-hs-screening",
        "/cds-services/iec-hs-screening/feedback",
    ):
        allowed = client.options(path, headers={"Origin": "https://ehr.example.org", **headers})
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
        assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
        assert "Access-Control-Allow-Credentials" not in allowed.headers
        other = client.options(path, headers={"Origin": "https://evil.example.org", **headers})
        assert "Access-Control-Allow-Origin" not in other.headers
    refused = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert (
        refused.status_code == 401
        and refused.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    )


def test_dev_mode_allows_any_origin(app: Flask) -> None:
    response = app.test_client().get("/cds-services", headers={"Origin": "http://localhost:3000"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_unknown_routes_are_json_outcomes(app: Flask) -> None:
    response = app.test_client().get("/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("url", "dev", "prod"),
    [
        ("https://ehr.example.org/fhir", True, True),
        ("http://127.0.0.1:8090/fhir", True, False),
        ("http://localhost/fhir", True, False),
        ("http://[::1]:80/fhir", True, False),
        ("http://ehr.example.org/fhir", False, False),
        ("http://10.0.0.1/fhir", False, False),
        ("ftp://127.0.0.1/fhir", False, False),
    ],
)
def test_fhir_server_policies(url: str, dev: bool, prod: bool) -> None:
    assert dev_fhir_server_policy(url) is dev
    assert https_only_policy(url) is prod


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.2") and is_loopback_host("::1") and is_loopback_host("LOCALHOST")
    assert not is_loopback_host("example.org") and not is_loopback_host("10.1.1.1")


def test_json_error_bodies_never_hold_a_traceback(app: Flask) -> None:
    response = app.test_client().post(
        "/cds-services/iec-hs-screening", data=b"{not json", content_type="application/json"
    )
    text = json.dumps(response.get_json())
    assert response.status_code == 400 and "Traceback" not in text and ".py" not in text
