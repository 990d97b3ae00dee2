"""Faults while watching, on the real stack with fault injection (STACK_ADMIN): a FHIR server failing or
slow for one patient, a revoked or refused token, a token endpoint down, a narrowed grant (403), a deleted
patient, a webhook receiver down. The watcher keeps going for the other patients, shows the problem on the
worklist and in the metrics, and loses no status change; the FHIR write-back is created once even when
its delivery is repeated."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from standardwebhooks import Webhook

from cds_service.watch.store import outbox_table
from tests.plugins.fhir_stack import FhirStack
from tests.plugins.rest_hook import RestHookReceiver
from tests.plugins.smart_backend import BackendClient, generate_backend_client
from tests.watch_helpers import (
    Course,
    course,
    engine_statuses,
    first_rise,
    new_secret,
    put_all,
    renamed,
    servers_file,
    state_of,
    watch_app,
    watcher_client,
)

# The instants come from the engine (tests.watch_helpers.first_rise), so the tests follow its course.
COURSE_START = datetime.fromisoformat("2026-03-08T00:00:00+00:00")
COURSE_END = datetime.fromisoformat("2026-03-16T00:00:00+00:00")
NARROW_SCOPE = (
    "system/Patient.rs system/Observation.rs system/Procedure.rs system/MedicationAdministration.rs "
)
NARROW_SCOPE += "system/MedicationRequest.rs"  # no Condition


@pytest.fixture(scope="module")
def client() -> BackendClient:
    return watcher_client("cds-watch-faults")


@pytest.fixture(scope="module")
def narrow() -> BackendClient:
    return generate_backend_client("cds-watch-narrow", alg="RS384", scope=NARROW_SCOPE)


@pytest.fixture(scope="module")
def v1() -> BackendClient:
    return generate_backend_client("cds-watch-v1", alg="ES384", scope="system/*.read system/Flag.write")


@pytest.fixture(scope="module")
def stack(
    fhir_stack: FhirStack, client: BackendClient, narrow: BackendClient, v1: BackendClient
) -> Iterator[FhirStack]:
    clients = [client, narrow, v1]
    with fhir_stack.start_extra({"STACK_ADMIN": "true"}, seeds=[], backend_clients=clients) as extra:
        yield extra


@pytest.fixture(scope="module")
def times() -> tuple[datetime, datetime]:
    """(quiet, rise) of the classic course: neither possible nor met, then possible or met."""
    quiet, rise = first_rise(course("classic-iec-hs"), COURSE_START, COURSE_END, timedelta(hours=6))
    for name in ("classic-iec-hs", "si-units"):
        (before, _), (after, _) = engine_statuses(course(name), [quiet, rise])
        assert before not in ("possible", "met") and after in ("possible", "met"), (name, before, after)
    return quiet, rise


@pytest.fixture(autouse=True)
def no_faults(stack: FhirStack) -> Iterator[None]:
    stack.clear_faults()
    yield
    stack.clear_faults()


def patients(stack: FhirStack, *names: str, until: datetime) -> list[Course]:
    """Fresh copies of scenario courses under new ids, loaded up to `until`."""
    run = uuid.uuid4().hex[:6]
    courses = [renamed(course(name), f"f{run}-{i}", f"f{run}-") for i, name in enumerate(names)]
    for replay in courses:
        put_all(stack, replay.static + replay.until(None, until))
    return courses


def enrol(web: FlaskClient, stack: FhirStack, courses: list[Course]) -> None:
    for replay in courses:
        body = {"patientId": replay.patient_id, "fhirServer": stack.fhir_base}
        assert web.post("/watch/api/enroll", json=body).status_code == 201


def rows(web: FlaskClient) -> dict[str, dict[str, Any]]:
    return {p["patientId"]: p for p in web.get("/watch/api/patients").get_json()["patients"]}


def problem_count(app: Flask, kind: str) -> float:
    for line in app.test_client().get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(f'cds_watch_problems_total{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_failing_or_slow_server_for_one_patient_spares_the_others_and_loses_no_change(
    stack: FhirStack, client: BackendClient, tmp_path: Path, times: tuple[datetime, datetime]
) -> None:
    quiet, rise = times
    secret = new_secret()
    with RestHookReceiver() as receiver:
        app = watch_app(
            tmp_path,
            servers_file(tmp_path, stack, client),
            CDS_WATCH_WEBHOOK_URL=receiver.url,
            CDS_WATCH_WEBHOOK_SECRET=secret,
            CDS_WATCH_SUBSCRIPTIONS=False,
            CDS_WATCH_FETCH_BUDGET_S=2,
        )
        state, web = state_of(app), app.test_client()
        a, b = patients(stack, "classic-iec-hs", "si-units", until=quiet)
        enrol(web, stack, [a, b])
        state.cycle(full=True, at=quiet)
        quiet_status = rows(web)[a.patient_id]["status"]
        assert quiet_status not in ("possible", "met")
        for replay in (a, b):
            put_all(stack, replay.until(quiet, rise))
        ((risen, _),) = engine_statuses(b, [rise])
        before = problem_count(app, "http-5xx"), problem_count(app, "timeout")
        stack.set_fault(f"/fhir/Patient/{a.patient_id}", status=503, count=1)
        cycle, _ = state.cycle(full=True, at=rise)
        assert (cycle.failed, cycle.evaluated) == (1, 1)
        listed = rows(web)
        assert (
            listed[a.patient_id]["problem"] == "HTTP 503" and listed[a.patient_id]["status"] == quiet_status
        )
        assert listed[b.patient_id]["problem"] is None and listed[b.patient_id]["status"] == risen
        page = web.get("/smart/worklist").get_data(as_text=True)
        assert "⚠ HTTP 503" in page
        stack.set_fault(f"/fhir/Patient/{a.patient_id}", delay_ms=3500, count=1)
        started = time.monotonic()
        cycle, _ = state.cycle(full=True, at=rise)
        assert cycle.failed == 1 and time.monotonic() - started < 3.4  # the budget, not the server, decides
        assert rows(web)[a.patient_id]["problem"] == "timeout"
        cycle, _ = state.cycle(full=True, at=rise)  # the server is back: the rise is not lost
        assert cycle.failed == 0
        listed = rows(web)
        assert listed[a.patient_id]["status"] == risen and listed[a.patient_id]["problem"] is None
        bodies = [Webhook(secret).verify(n.raw, n.headers) for n in receiver.notifications]
        assert sorted(body["patientId"] for body in bodies) == sorted([a.patient_id, b.patient_id])
        assert (
            problem_count(app, "http-5xx") == before[0] + 1 and problem_count(app, "timeout") == before[1] + 1
        )


def test_tokens_are_renewed_and_token_patient_and_scope_problems_are_shown(
    stack: FhirStack,
    client: BackendClient,
    narrow: BackendClient,
    tmp_path: Path,
    times: tuple[datetime, datetime],
) -> None:
    at = times[1]
    app = watch_app(tmp_path, servers_file(tmp_path, stack, client), CDS_WATCH_SUBSCRIPTIONS=False)
    state, web = state_of(app), app.test_client()
    a, b = patients(stack, "classic-iec-hs", "si-units", until=at)
    enrol(web, stack, [a, b])
    state.cycle(full=True, at=at)
    (server,) = list(state.servers)
    first = state.watcher.tokens.token(server)
    # Revoked (or expired) tokens: one 401, a new token, no problem.
    assert stack.revoke_backend_tokens() >= 1
    cycle, _ = state.cycle(full=True, at=at)
    assert (cycle.failed, cycle.unchanged) == (0, 2)
    assert state.watcher.tokens.token(server) is not first
    # A server that keeps refusing the new token too.
    stack.set_fault(f"/fhir/Patient/{a.patient_id}", status=401, count=2)
    cycle, _ = state.cycle(full=True, at=at)
    assert cycle.failed == 1 and rows(web)[a.patient_id]["problem"] == "HTTP 401"
    # The token endpoint is down when a new token is needed.
    stack.revoke_backend_tokens()
    stack.set_fault("/token", server="auth", status=503, count=5)
    cycle, _ = state.cycle(full=True, at=at)
    assert cycle.failed == 2
    assert all(p["problem"].startswith("token request refused") for p in rows(web).values())
    stack.clear_faults()
    # A deleted patient: shown, and the other goes on.
    assert stack.http.delete(f"{stack.fhir_base}/Patient/{b.patient_id}", timeout=30).status_code in (
        200,
        204,
    )
    cycle, _ = state.cycle(full=True, at=at)
    listed = rows(web)
    assert listed[b.patient_id]["problem"] == "patient not found on the FHIR server"
    assert listed[a.patient_id]["problem"] is None
    metrics = web.get("/metrics").get_data(as_text=True)
    assert "cds_watch_patients_with_problem 1.0" in metrics
    # A grant narrower than asked (no Condition): evaluated on what could be read, then refused polls.
    narrow_app = watch_app(tmp_path / "narrow", servers_file(_dir(tmp_path / "narrow"), stack, narrow))
    narrow_state, narrow_web = state_of(narrow_app), narrow_app.test_client()
    enrol(narrow_web, stack, [a])
    cycle, _ = narrow_state.cycle(full=True, at=at)
    assert cycle.evaluated == 1
    assert rows(narrow_web)[a.patient_id]["problem"] == "incomplete data: conditions"
    cycle, _ = narrow_state.cycle(full=True, at=at)  # polls go on; the refused search is reported
    assert (cycle.failed, cycle.unchanged) == (0, 1)
    assert rows(narrow_web)[a.patient_id]["problem"] == "incomplete data: conditions (HTTP 403)"
    assert rows(narrow_web)[a.patient_id]["status"] is not None  # evaluated on what could be read


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_webhook_receiver_down_gets_the_change_later_once_and_the_write_back_is_created_once(
    stack: FhirStack, client: BackendClient, tmp_path: Path, times: tuple[datetime, datetime]
) -> None:
    rise = times[1]
    secret = new_secret()
    with RestHookReceiver(status=500) as receiver:
        app = watch_app(
            tmp_path,
            servers_file(tmp_path, stack, client),
            CDS_WATCH_WEBHOOK_URL=receiver.url,
            CDS_WATCH_WEBHOOK_SECRET=secret,
            CDS_WATCH_WEBHOOK_RETRY_S=0.2,
            CDS_WATCH_WRITE_BACK="Communication",
            CDS_WATCH_SUBSCRIPTIONS=False,
        )
        state, web = state_of(app), app.test_client()
        before = {outcome: counter(app, "webhook", outcome) for outcome in ("failed", "sent")}
        (a,) = patients(stack, "classic-iec-hs", until=rise)
        enrol(web, stack, [a])
        cycle, delivery = state.cycle(full=True, at=rise)
        assert cycle.changes == 1 and delivery.failed == 1 and delivery.sent == 1  # webhook down, FHIR fine
        assert rows(web)[a.patient_id]["status"] == engine_statuses(a, [rise])[0][0]
        page = web.get("/smart/worklist").get_data(as_text=True)
        assert "webhook notification retrying: HTTP 500" in page
        time.sleep(0.25)
        assert state.watcher.deliver().failed == 1  # still down: retried, later again (jittered backoff)
        receiver.status = 200
        deadline = time.monotonic() + 10
        while state.watcher.deliver().sent == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        delivered = [n for n in receiver.notifications if n.answered == 200]
        assert len(delivered) == 1 and len(receiver.notifications) == 3
        assert {n.headers["webhook-id"] for n in receiver.notifications} == {
            delivered[0].headers["webhook-id"]
        }
        body = Webhook(secret).verify(delivered[0].raw, delivered[0].headers)
        assert body["current"]["status"] == engine_statuses(a, [rise])[0][0]
        assert "retrying" not in web.get("/smart/worklist").get_data(as_text=True)
        assert counter(app, "webhook", "failed") == before["failed"] + 2
        assert counter(app, "webhook", "sent") == before["sent"] + 1
        change_id = delivered[0].headers["webhook-id"]
        found = communications(stack, change_id)
        assert len(found) == 1 and found[0]["subject"] == {"reference": f"Patient/{a.patient_id}"}
        # The write-back delivered again (as after a crash before its "sent" mark): still one Communication.
        with state.store.engine.begin() as connection:
            connection.execute(
                update(outbox_table).where(outbox_table.c.channel == "fhir").values(state="pending")
            )
        assert state.watcher.deliver().sent == 1
        assert len(communications(stack, change_id)) == 1


def counter(app: Flask, channel: str, outcome: str) -> float:
    """cds_watch_notifications_total of this process (counters add up over the whole test session)."""
    prefix = f'cds_watch_notifications_total{{channel="{channel}",outcome="{outcome}"}}'
    for line in app.test_client().get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def communications(stack: FhirStack, change_id: str) -> list[dict[str, Any]]:
    bundle = stack.http.get(
        f"{stack.fhir_base}/Communication",
        params={"identifier": f"urn:ietf:rfc:3986|urn:uuid:{change_id}"},
        timeout=30,
    ).json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


def test_v1_system_scopes_read_and_a_flag_is_written_back(
    stack: FhirStack, v1: BackendClient, tmp_path: Path, times: tuple[datetime, datetime]
) -> None:
    rise = times[1]
    """SMART v1 scope syntax (`system/*.read`, `system/Flag.write`) and the Flag variant of the write-back."""
    app = watch_app(
        tmp_path,
        servers_file(tmp_path, stack, v1, scopes="system/*.read system/Flag.write"),
        CDS_WATCH_WRITE_BACK="Flag",
        CDS_WATCH_SUBSCRIPTIONS=False,
    )
    state, web = state_of(app), app.test_client()
    (a,) = patients(stack, "classic-iec-hs", until=rise)
    enrol(web, stack, [a])
    cycle, delivery = state.cycle(full=True, at=rise)
    assert (cycle.evaluated, cycle.changes, delivery.sent) == (1, 1, 1)
    (server,) = list(state.servers)
    assert state.watcher.tokens.token(server).scopes == frozenset({"system/*.read", "system/Flag.write"})
    (change,) = state.store.changes()
    bundle = stack.http.get(
        f"{stack.fhir_base}/Flag",
        params={"identifier": f"urn:ietf:rfc:3986|urn:uuid:{change['change_id']}"},
        timeout=30,
    ).json()
    (flag,) = [entry["resource"] for entry in bundle["entry"]]
    assert flag["status"] == "active" and flag["subject"] == {"reference": f"Patient/{a.patient_id}"}
    assert f"IEC-HS screening: status {engine_statuses(a, [rise])[0][0]}" in flag["code"]["text"]
