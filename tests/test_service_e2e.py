"""End to end over real HTTP: `cds-service serve --dev` (gunicorn, a real server process) on a free
loopback port, the real test FHIR server for fallback queries, and a feedback database that must survive a
restart of the server process. Every hook response is checked against the cds-response schema and the
invariants any conforming card renderer keeps (summary < 140 characters, suggestions need
selectionBehavior, override reasons have a display, unique uuids)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_service.engine.knowledge import load_knowledge
from cds_service.hooks.feedback import FeedbackStore
from cds_service.hooks.services import build_registry
from cds_service.hooks.validation import errors as schema_errors
from tests import fhir_builders as fb
from tests.cds_helpers import (
    PREFETCH_KEYS,
    assert_conformant,
    car_t_patient,
    full_prefetch,
    hook_body,
    sandbox_draft_orders,
    unique,
    without_uuids,
)
from tests.plugins.fhir_stack import FhirStack, free_port

CLI = Path(sys.executable).with_name("cds-service")
START_TIMEOUT_S = 60


@dataclass
class ServerProcess:
    """One `cds-service serve --dev` process (gunicorn master + workers)."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def request_lines(self) -> list[dict[str, Any]]:
        lines = []
        for text in self.log().splitlines():
            if text.startswith("{") and '"event":"request"' in text:
                lines.append(json.loads(text))
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn: graceful stop of master and workers
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own process group only
                self.process.wait(timeout=10)


def start_server(workdir: Path, database_url: str) -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "DATABASE_URL"}
    env.update({"DATABASE_URL": database_url, "CDS_WORKERS": "2", "CDS_THREADS": "4"})
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(CLI), "serve", "--dev", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-4000:]}")
        try:
            if requests.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become healthy within {START_TIMEOUT_S} s:\n{server.log()[-4000:]}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[ServerProcess]:
    running = start_server(workdir, f"sqlite:///{workdir / 'shared.sqlite3'}")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def patient(fhir_stack: FhirStack) -> tuple[str, list[dict[str, Any]]]:
    pid = unique("e2e")
    resources = car_t_patient(pid, datetime.now(UTC))
    fhir_stack.load_bundle(fb.bundle(*resources))
    return pid, resources


def call(server: ServerProcess, service: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.base_url}/cds-services/{service}", json=body, timeout=10)


def cards_of(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert_conformant(body)
    return body


def test_startup_banner_and_dev_mode_warning(server: ServerProcess) -> None:
    log = server.log()
    assert "DEVELOPMENT MODE: client authentication is OFF" in log
    assert f"{server.base_url}/cds-services" in log
    health = requests.get(f"{server.base_url}/healthz", timeout=5).json()
    assert health["status"] == "ok" and health["mode"] == "development"


def test_discovery(server: ServerProcess) -> None:
    response = requests.get(f"{server.base_url}/cds-services", timeout=5)
    assert response.status_code == 200
    assert schema_errors("discovery", response.json()) == []
    assert response.json() == build_registry(load_knowledge()).discovery()
    preflight = requests.options(
        f"{server.base_url}/cds-services/iec-hs-screening",
        headers={"Origin": "http://127.0.0.1:3000", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


def test_patient_view_with_full_prefetch(
    server: ServerProcess, patient: tuple[str, list[dict[str, Any]]]
) -> None:
    pid, resources = patient
    body = cards_of(
        call(server, "iec-hs-screening", hook_body("patient-view", pid, prefetch=full_prefetch(resources)))
    )
    assert body["cards"], "a patient after CAR-T with rising ferritin gets an IEC-HS card"


def test_partial_prefetch_is_filled_from_the_fhir_server(
    server: ServerProcess, fhir_stack: FhirStack, patient: tuple[str, list[dict[str, Any]]]
) -> None:
    pid, resources = patient
    prefetch = full_prefetch(resources)
    del prefetch["observations"], prefetch["medicationAdministrations"]
    partial = hook_body(
        "patient-view", pid, prefetch=prefetch, fhir_server=fhir_stack.fhir_base, token=fhir_stack.token
    )
    response = call(server, "iec-hs-screening", partial)
    filled = cards_of(response)
    full = cards_of(
        call(server, "iec-hs-screening", hook_body("patient-view", pid, prefetch=full_prefetch(resources)))
    )
    assert without_uuids(filled) == without_uuids(full)
    line = next(x for x in server.request_lines() if x["request_id"] == response.headers["X-Request-Id"])
    assert line["prefetch"]["observations"] == "fhir" and line["prefetch"]["patient"] == "prefetch"


def test_null_prefetch_means_no_data(
    server: ServerProcess, patient: tuple[str, list[dict[str, Any]]]
) -> None:
    pid, _ = patient
    body = hook_body("patient-view", pid, prefetch={key: None for key in PREFETCH_KEYS})
    cards_of(call(server, "iec-hs-screening", body))


def test_no_data_at_all_is_412(server: ServerProcess) -> None:
    response = call(server, "iec-hs-screening", hook_body("patient-view", "nobody"))
    assert response.status_code == 412
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome" and issue["code"] == "incomplete"
    assert issue["expression"] == ["prefetch.patient", "prefetch.observations"]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_order_hooks_with_sandbox_draft_orders(
    server: ServerProcess, patient: tuple[str, list[dict[str, Any]]], hook: str
) -> None:
    pid, resources = patient
    context: dict[str, Any] = {"draftOrders": sandbox_draft_orders(pid)}
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/request-123"]
    body = hook_body(hook, pid, prefetch=full_prefetch(resources), **context)
    cards_of(call(server, f"iec-hs-{hook}", body))


def test_errors_over_http(server: ServerProcess) -> None:
    assert call(server, "nope", hook_body("patient-view", "p1")).status_code == 404
    wrong_type = requests.post(f"{server.base_url}/cds-services/iec-hs-screening", data="x", timeout=5)
    assert wrong_type.status_code == 415
    malformed = requests.post(
        f"{server.base_url}/cds-services/iec-hs-screening",
        data="{",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert malformed.status_code == 400 and malformed.json()["resourceType"] == "OperationOutcome"


def test_request_log_has_no_phi(
    server: ServerProcess, patient: tuple[str, list[dict[str, Any]]], fhir_stack: FhirStack
) -> None:
    pid, _ = patient
    lines = server.request_lines()
    assert lines and all({"request_id", "endpoint", "status", "duration_ms"} <= set(x) for x in lines)
    assert pid not in server.log() and fhir_stack.token not in server.log()


def test_feedback_survives_a_server_restart(workdir: Path, patient: tuple[str, list[dict[str, Any]]]) -> None:
    pid, resources = patient
    database_url = f"sqlite:///{workdir / 'restart.sqlite3'}"
    first = start_server(workdir, database_url)
    try:
        response = cards_of(
            call(first, "iec-hs-screening", hook_body("patient-view", pid, prefetch=full_prefetch(resources)))
        )
        card = response["cards"][0]
        item: dict[str, Any] = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-24T00:10:24.485Z",
        }
        if "overrideReasons" in card:
            reason = card["overrideReasons"][0]
            item["overrideReason"] = {"reason": {"code": reason["code"], "system": reason["system"]}}
        accepted: dict[str, Any] | None = None
        if card.get("suggestions"):
            suggestion = card["suggestions"][0]["uuid"]
            accepted = {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion}],
                "outcomeTimestamp": "2026-11-24T00:10:25Z",
            }
        feedback = {"feedback": [item] + ([accepted] if accepted else [])}
        stored = requests.post(
            f"{first.base_url}/cds-services/iec-hs-screening/feedback", json=feedback, timeout=5
        )
        assert stored.status_code == 200 and stored.json()["stored"] == len(feedback["feedback"])
    finally:
        first.stop()
    second = start_server(workdir, database_url)
    try:
        again = requests.post(
            f"{second.base_url}/cds-services/iec-hs-screening/feedback", json=feedback, timeout=5
        )
        assert again.status_code == 200 and again.json() == {
            "received": len(feedback["feedback"]),
            "stored": 0,
        }
    finally:
        second.stop()
    store = FeedbackStore(database_url)
    try:
        assert {r.card_uuid for r in store.all("iec-hs-screening")} == {card["uuid"]}
        assert len(store.all()) == len(feedback["feedback"])
    finally:
        store.engine.dispose()
