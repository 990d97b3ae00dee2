"""Noticing new data without waiting for a poll: the watcher running as it does in `cds-service serve` (an
app served over HTTP, its APScheduler tick), a patient whose data are dated relative to now, the real
stack's R4 backport rest-hook Subscriptions, and a loopback webhook receiver.

* With Subscriptions: a new Observation reaches the receiver as a signed webhook in seconds, although the
  poll interval is an hour (the lag is printed, and recorded in cds_watch_result_lag_seconds).
* Without (FHIR_SUBSCRIPTIONS=false): the watcher falls back to polling and finds it at the next poll.
* `cds-service serve` (gunicorn, two workers): each worker runs a scheduler; the patient is evaluated once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook

from cds_service.smart.devserver import serve
from tests import fhir_builders as fb
from tests.cds_helpers import for_patient, unique
from tests.gunicorn_process import start_server
from tests.plugins.fhir_stack import FhirStack, free_port
from tests.plugins.rest_hook import RestHookReceiver
from tests.plugins.smart_backend import BackendClient
from tests.watch_helpers import (
    dispose,
    new_secret,
    put_all,
    servers_file,
    state_of,
    watch_app,
    watcher_client,
)


@pytest.fixture(scope="module")
def client() -> BackendClient:
    return watcher_client("cds-watch-live")


def possible_patient(pid: str, now: datetime) -> list[dict[str, Any]]:
    """Infused 10 days ago, CRS resolved, ferritin rising: IEC-HS possible until an HLH-specific finding."""
    infusion = now - timedelta(days=10)
    return for_patient(
        pid,
        [
            fb.patient(pid, birth="1968-04-02"),
            fb.car_t(infusion),
            fb.obs("2276-4", 300, "ng/mL", infusion - timedelta(days=3), high=300),
            fb.obs("2276-4", 4200, "ng/mL", now - timedelta(days=2), high=300),
            fb.obs("2276-4", 9800, "ng/mL", now - timedelta(hours=20), high=300),
            fb.obs("29463-7", 72, "kg", now - timedelta(days=9)),
            fb.crs(2, infusion + timedelta(days=1), abatement=infusion + timedelta(days=4)),
        ],
    )


def fibrinogen(pid: str) -> dict[str, Any]:
    (resource,) = for_patient(
        pid, [fb.obs("3255-7", 110, "mg/dL", datetime.now(UTC) - timedelta(minutes=1), low=200)]
    )
    return resource


def run_live(
    stack: FhirStack, client: BackendClient, tmp_path: Path, **config: Any
) -> tuple[dict[str, Any], float]:
    """Enrol a 'possible' patient in a served, scheduled watcher, add the deciding result, wait for the
    webhook; returns the last webhook body and the lag from the POST of the Observation to its arrival."""
    secret, port = new_secret(), free_port()
    pid = unique("live")
    put_all(stack, possible_patient(pid, datetime.now(UTC)))
    with RestHookReceiver() as receiver:
        app = watch_app(
            tmp_path,
            servers_file(tmp_path, stack, client),
            CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            CDS_WATCH_WEBHOOK_URL=receiver.url,
            CDS_WATCH_WEBHOOK_SECRET=secret,
            CDS_WATCH_TICK_S=0.5,
            **config,
        )
        state = state_of(app)
        with serve(app, port):
            state.scheduler.start()
            try:
                web = app.test_client()
                enrol = {"patientId": pid, "fhirServer": stack.fhir_base}
                assert web.post("/watch/api/enroll", json=enrol).status_code == 201
                first = receiver.wait_for(lambda n: True, timeout=60)
                assert Webhook(secret).verify(first.raw, first.headers)["current"]["status"] == "possible"
                started = time.monotonic()
                created = stack.http.post(f"{stack.fhir_base}/Observation", json=fibrinogen(pid), timeout=30)
                assert created.status_code == 201
                second = receiver.wait_for(
                    lambda n: n.headers["webhook-id"] != first.headers["webhook-id"], timeout=60
                )
                lag = time.monotonic() - started
                body = Webhook(secret).verify(second.raw, second.headers)
                assert (body["previous"]["status"], body["current"]["status"]) == ("possible", "met")
                assert len(receiver.notifications) == 2
                metrics = web.get("/metrics").get_data(as_text=True)
                assert "cds_watch_result_lag_seconds_count" in metrics
                return {"body": body, "entry": state.store.active()[0], "metrics": metrics}, lag
            finally:
                state.scheduler.stop()
                dispose(app)


def test_a_subscription_brings_a_new_result_to_the_webhook_in_seconds(
    fhir_stack: FhirStack, client: BackendClient, tmp_path: Path
) -> None:
    with fhir_stack.start_extra({}, seeds=[], backend_clients=[client]) as stack:
        # An hour between polls: only the rest-hook notification can explain a fast webhook.
        result, lag = run_live(stack, client, tmp_path, CDS_WATCH_POLL_S=3600, CDS_WATCH_POLL_TIGHT_S=3600)
    entry = result["entry"]
    assert entry.subscription_state in {"active", "requested"} and entry.subscription_id
    assert 'noticed_by="subscription"' in result["metrics"]
    print(f"\nlag from a new Observation to its webhook (rest-hook Subscription): {lag:.2f} s")
    assert lag < 15


def test_without_subscriptions_the_watcher_polls_and_finds_the_result(
    fhir_stack: FhirStack, client: BackendClient, tmp_path: Path
) -> None:
    with fhir_stack.start_extra({"FHIR_SUBSCRIPTIONS": "false"}, seeds=[], backend_clients=[client]) as stack:
        result, lag = run_live(stack, client, tmp_path, CDS_WATCH_POLL_S=2, CDS_WATCH_POLL_TIGHT_S=1)
    assert result["entry"].subscription_state == "unsupported"
    assert 'noticed_by="poll"' in result["metrics"]
    print(f"\nlag from a new Observation to its webhook (polling every 1 s while possible): {lag:.2f} s")
    assert lag < 15


def test_cds_service_serve_runs_the_watcher_in_its_workers(
    fhir_stack: FhirStack, client: BackendClient, tmp_path: Path
) -> None:
    """The embedded mode of `make run`: gunicorn, two workers with a scheduler each, one SQLite file."""
    with fhir_stack.start_extra({"FHIR_SUBSCRIPTIONS": "false"}, seeds=[], backend_clients=[client]) as stack:
        pid = unique("served")
        put_all(stack, possible_patient(pid, datetime.now(UTC)))
        servers = servers_file(tmp_path, stack, client)
        server = start_server(
            tmp_path,
            free_port(),
            {"CDS_WATCH_SERVERS_FILE": str(servers), "CDS_WATCH_TICK_S": "0.5", "CDS_WORKERS": "2"},
            label="watch",
        )
        try:
            enrol = {"patientId": pid, "fhirServer": stack.fhir_base}
            assert (
                requests.post(f"{server.base_url}/watch/api/enroll", json=enrol, timeout=30).status_code
                == 201
            )
            deadline = time.monotonic() + 60
            while True:
                (row,) = requests.get(f"{server.base_url}/watch/api/patients", timeout=30).json()["patients"]
                if row["status"] is not None:
                    break
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.2)
            assert row["status"] == "possible" and row["problem"] is None
            started = [line for line in server.json_lines() if line.get("event") == "watch-scheduler"]
            assert len(started) == 2  # one scheduler per worker
            cycles = [line for line in server.json_lines() if line.get("event") == "watch-cycle"]
            assert sum(line["evaluated"] for line in cycles) == 1  # evaluated once, by one of the workers
            assert pid not in server.log()
        finally:
            server.stop()
