"""Health, readiness and metrics: /healthz and the version, /readyz checks (503 with reasons), Prometheus
counters for requests, prefetch sources, FHIR calls (real loopback servers), cards and feedback; no PHI in
any label; and multiprocess aggregation across the workers of a real `cds-service serve` process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

import cds_service
from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.errors import DataFileError
from cds_service.web import health
from cds_service.web.state import EXTENSION_KEY, get_state
from tests.cds_helpers import car_t_patient, dev_config, full_prefetch, hook_body, unique
from tests.loopback_http import Reply, Seen, closed_port_url, serving
from tests.plugins.fhir_stack import free_port

HOOK = "/cds-services/<service_id>"
CLI = Path(sys.executable).with_name("cds-service")


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(dev_config(tmp_path))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sample(name: str, **labels: str) -> float:
    """Current value of one series in this process's default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def patient_view(client: FlaskClient, pid: str, **extra: Any) -> Any:
    return client.post("/cds-services/iec-hs-screening", json=hook_body("patient-view", pid, **extra))


# --- liveness and version ---------------------------------------------------------------------------


def test_healthz_reports_the_package_version_and_mode(client: FlaskClient) -> None:
    body = client.get("/healthz").get_json()
    assert body == {"status": "ok", "version": cds_service.__version__, "mode": "development"}


def test_discovery_does_not_depend_on_the_version(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = client.get("/cds-services").data
    monkeypatch.setattr(health, "__version__", "99.0.0-test")
    assert client.get("/healthz").get_json()["version"] == "99.0.0-test"
    assert client.get("/cds-services").data == before
    assert cds_service.__version__.encode() not in before


# --- readiness ----------------------------------------------------------------------------------------


def test_readyz_is_ready_with_every_check_ok(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready" and body["version"] == cds_service.__version__
    assert body["checks"] == {"mappings": {"ok": True}, "cardContent": {"ok": True}, "database": {"ok": True}}


def test_readyz_is_503_when_the_database_is_unreachable(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port_url().split(":")[2].split("/")[0]
    unreachable = create_engine(f"postgresql+psycopg://cds:secret-pw@127.0.0.1:{port}/cds")
    monkeypatch.setattr(get_state(app).feedback, "engine", unreachable)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == {"ok": False, "reason": "database check failed (OperationalError)"}
    assert body["checks"]["mappings"] == {"ok": True}
    assert "secret-pw" not in response.text and port not in response.text


def test_readyz_bounds_a_database_that_never_answers(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_DB_TIMEOUT_S", 0.2)
    monkeypatch.setattr(health, "_select_one", lambda _state: time.sleep(2))
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 1.5
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"]["reason"] == "database did not answer within 0.2 s"


def test_readyz_reports_mappings_and_card_content(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_state(app).knowledge, "analytes", {})
    state = get_state(app)
    empty = dataclasses.replace(state, cards=dataclasses.replace(state.cards, options=()))
    monkeypatch.setitem(app.extensions, EXTENSION_KEY, empty)
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["mappings"] == {"ok": False, "reason": "mappings not loaded"}
    assert checks["cardContent"] == {"ok": False, "reason": "card content not loaded"}


def test_a_failing_readiness_check_names_no_file_path(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_state: object) -> None:
        raise DataFileError("/srv/cards/templates.yaml", "$.cards", "bad")

    monkeypatch.setitem(health.CHECKS, "cardContent", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["cardContent"] == {
        "ok": False,
        "reason": "cardContent check failed (DataFileError)",
    }
    assert "/srv/cards" not in response.text  # file paths go to the log, not to an unauthenticated probe


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_is_prometheus_text(client: FlaskClient) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "cds_http_requests",
        "cds_http_request_duration_seconds",
        "cds_prefetch_keys",
        "cds_prefetch_data_gaps",
        "cds_fhir_request_duration_seconds",
        "cds_fhir_request_errors",
        "cds_cards",
        "cds_feedback_items",
        "cds_feedback_stored",
        "cds_build_info",
    } <= names
    assert f'cds_build_info{{version="{cds_service.__version__}"}} 1.0' in response.text
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_hook_calls_count_requests_latency_prefetch_hits_and_cards(client: FlaskClient) -> None:
    pid = unique("metrics")
    labels = {"method": "POST", "endpoint": HOOK, "hook": "patient-view"}
    before = {
        "ok": sample("cds_http_requests_total", **labels, status="200"),
        "latency": sample("cds_http_request_duration_seconds_count", **labels),
        "hit": sample("cds_prefetch_keys_total", hook="patient-view", key="observations", source="prefetch"),
        "critical": sample("cds_cards_total", hook="patient-view", indicator="critical"),
    }
    response = patient_view(client, pid, prefetch=full_prefetch(car_t_patient(pid)))
    assert response.status_code == 200
    indicators = [card["indicator"] for card in response.get_json()["cards"]]
    assert sample("cds_http_requests_total", **labels, status="200") == before["ok"] + 1
    assert sample("cds_http_request_duration_seconds_count", **labels) == before["latency"] + 1
    assert (
        sample("cds_prefetch_keys_total", hook="patient-view", key="observations", source="prefetch")
        == before["hit"] + 1
    )
    assert sample("cds_cards_total", hook="patient-view", indicator="critical") == before[
        "critical"
    ] + indicators.count("critical")


def fhir_handler(pid: str) -> Any:
    resources = car_t_patient(pid)

    def handle(seen: Seen) -> Reply:
        kind = seen.path.rstrip("/").split("/")[-1 if "?" not in seen.path else -1]
        if seen.path.endswith(f"/Patient/{pid}"):
            return Reply(body=resources[0])
        matching = [r for r in resources if r["resourceType"] == kind]
        entries = [{"resource": r} for r in matching]
        return Reply(body={"resourceType": "Bundle", "type": "searchset", "entry": entries})

    return handle


def test_fhir_fallback_counts_sources_latency_and_errors(client: FlaskClient) -> None:
    pid = unique("fallback")
    before_fhir = sample("cds_prefetch_keys_total", hook="patient-view", key="observations", source="fhir")
    before_2xx = sample("cds_fhir_request_duration_seconds_count", outcome="2xx")
    with serving(fhir_handler(pid)) as fhir:
        response = patient_view(client, pid, fhir_server=f"{fhir.base_url}/fhir")
    assert response.status_code == 200
    assert (
        sample("cds_prefetch_keys_total", hook="patient-view", key="observations", source="fhir")
        == before_fhir + 1
    )
    assert sample("cds_fhir_request_duration_seconds_count", outcome="2xx") == before_2xx + len(fhir.seen)

    before_5xx = sample("cds_fhir_request_errors_total", outcome="5xx")
    before_gap = sample("cds_prefetch_data_gaps_total", hook="patient-view", key="patient")
    with serving(lambda _seen: Reply(status=500, body={"resourceType": "OperationOutcome"})) as broken:
        assert patient_view(client, pid, fhir_server=f"{broken.base_url}/fhir").status_code == 412
    assert sample("cds_fhir_request_errors_total", outcome="5xx") == before_5xx + len(broken.seen)
    assert sample("cds_prefetch_data_gaps_total", hook="patient-view", key="patient") == before_gap + 1

    before_refused = sample("cds_fhir_request_errors_total", outcome="connection-error")
    assert patient_view(client, pid, fhir_server=closed_port_url()).status_code == 412
    assert sample("cds_fhir_request_errors_total", outcome="connection-error") >= before_refused + 1


def test_feedback_outcomes_and_stored_items_are_counted(client: FlaskClient) -> None:
    items = [
        {"card": unique("card"), "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:10:24.485Z"},
        {
            "card": unique("card"),
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "s-1"}],
            "outcomeTimestamp": "2026-11-24T00:10:25Z",
        },
    ]
    labels = {"service": "iec-hs-screening"}
    before = {o: sample("cds_feedback_items_total", **labels, outcome=o) for o in ("accepted", "overridden")}
    stored = sample("cds_feedback_stored_total", **labels)
    for _ in range(2):  # the repeat is received again but stored once
        response = client.post("/cds-services/iec-hs-screening/feedback", json={"feedback": items})
        assert response.status_code == 200
    assert sample("cds_feedback_items_total", **labels, outcome="accepted") == before["accepted"] + 2
    assert sample("cds_feedback_items_total", **labels, outcome="overridden") == before["overridden"] + 2
    assert sample("cds_feedback_stored_total", **labels) == stored + 2


def test_no_phi_or_ids_in_any_label(client: FlaskClient) -> None:
    pid = unique("phi-sentinel")
    hook_instance_marker = "hook-instance-sentinel"
    body = hook_body("patient-view", pid, prefetch=full_prefetch(car_t_patient(pid)))
    body["hookInstance"] = hook_instance_marker
    client.post("/cds-services/iec-hs-screening", json=body)
    client.post("/cds-services/no-such-service-sentinel", json=body)
    client.get(f"/cds-services/iec-hs-screening/{pid}")
    card = unique("card-sentinel")
    feedback = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:00:00Z"}
    client.post("/cds-services/iec-hs-screening/feedback", json={"feedback": [feedback]})
    with serving(fhir_handler(pid)) as fhir:
        patient_view(client, pid, fhir_server=f"{fhir.base_url}/fhir")
        port = fhir.base_url.rsplit(":", 1)[1]
    text = client.get("/metrics").text
    for secret in (pid, "phi-sentinel", hook_instance_marker, "no-such-service-sentinel", card, port):
        assert secret not in text
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            assert all(len(value) <= 64 for value in metric.labels.values()), metric


# --- multiprocess: a real server with two workers -----------------------------------------------------


@pytest.fixture
def two_worker_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}
    env.update({"CDS_WORKERS": "2", "CDS_THREADS": "2", "DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"})
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [str(CLI), "serve", "--dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, tmp_path / "server.log")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text(errors="replace")[-3000:])
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("server did not start:\n" + log.read_text(errors="replace")[-3000:])


def healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            if metric.name == "cds_http_requests_total" and metric.labels.get("endpoint") == "/healthz":
                return float(metric.value)
    return 0.0


def test_metrics_aggregate_every_gunicorn_worker(two_worker_server: str) -> None:
    for _ in range(30):  # a new connection each time: both workers answer some of them
        requests.get(f"{two_worker_server}/healthz", timeout=5, headers={"Connection": "close"})
    counts = set()
    for _ in range(6):
        response = requests.get(f"{two_worker_server}/metrics", headers={"Connection": "close"}, timeout=5)
        counts.add(healthz_count(response.text))
    # The first /healthz probes of wait_until_healthy count too; every worker answers with the same total.
    assert len(counts) == 1
    assert counts.pop() >= 30
    info = requests.get(f"{two_worker_server}/readyz", timeout=5).json()
    assert info["status"] == "ready", json.dumps(info)


def test_the_package_version_is_the_pyproject_version() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == cds_service.__version__
