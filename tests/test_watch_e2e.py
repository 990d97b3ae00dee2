"""The watch list end to end on the real test stack: fixture courses are replayed onto the FHIR server in
the order their results became available, the watcher polls with its own SMART Backend Services token, and
a real loopback receiver counts the signed webhooks. An independent oracle -- the engine run on exactly
the data available at each instant, without any FHIR server -- says which status changes there are.

* SQLite, in process: every round's worklist (JSON API and page) and exactly one webhook per change, then a
  `cds-service watch --once` process on the same database;
* enrolment from a hook call (stores patient id, server and infusion instant; never the hook's token);
* PostgreSQL with two `cds-service watch --once` processes per round: no patient evaluated twice, one
  webhook per change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from standardwebhooks import Webhook

from cds_service.watch.watcher import rises
from tests.cds_helpers import hook_body
from tests.plugins.fhir_stack import FhirStack
from tests.plugins.rest_hook import RestHookReceiver
from tests.plugins.smart_backend import BackendClient
from tests.watch_helpers import (
    Course,
    course,
    dispose,
    engine_statuses,
    new_secret,
    put_all,
    renamed,
    servers_file,
    state_of,
    watch_app,
    watcher_client,
)

CLI = Path(sys.executable).with_name("cds-service")
CLASSIC = "classic-iec-hs"
ROUNDS = [datetime.fromisoformat("2026-03-11T12:00:00+00:00") + timedelta(hours=12 * i) for i in range(9)]


@pytest.fixture(scope="module")
def client() -> BackendClient:
    return watcher_client("cds-watch-e2e")


@pytest.fixture(scope="module")
def stack(fhir_stack: FhirStack, client: BackendClient) -> Iterator[FhirStack]:
    """An empty stack of its own (the replay writes to it) with the watcher's backend client."""
    with fhir_stack.start_extra({}, seeds=[], backend_clients=[client]) as extra:
        yield extra


@pytest.fixture
def receiver() -> Iterator[RestHookReceiver]:
    with RestHookReceiver() as hook:
        yield hook


def oracle(replay: Course, instants: list[datetime]) -> list[tuple[str, int | None]]:
    return engine_statuses(replay, instants)


def expected_changes(statuses: list[tuple[str, int | None]]) -> list[tuple[str | None, str, int | None]]:
    changes: list[tuple[str | None, str, int | None]] = []
    previous: tuple[str | None, int | None] = (None, None)
    for status, grade in statuses:
        if rises(previous[0], previous[1], status, grade):
            changes.append((previous[0] if previous[0] in ("possible", "met") else None, status, grade))
        previous = (status, grade)
    return changes


def received(hook: RestHookReceiver, secret: str) -> list[dict[str, Any]]:
    """Every webhook body, each verified with the signing secret."""
    return [Webhook(secret).verify(n.raw, n.headers) for n in hook.notifications]


def by_patient(bodies: list[dict[str, Any]], patient: str) -> list[tuple[str | None, str, int | None]]:
    return [
        (b["previous"]["status"], b["current"]["status"], b["current"]["grade"])
        for b in bodies
        if b["patientId"] == patient
    ]


def test_replayed_courses_change_the_worklist_and_send_one_webhook_per_change(
    stack: FhirStack, client: BackendClient, receiver: RestHookReceiver, tmp_path: Path
) -> None:
    secret = new_secret()
    app = watch_app(
        tmp_path,
        servers_file(tmp_path, stack, client),
        CDS_WATCH_WEBHOOK_URL=receiver.url,
        CDS_WATCH_WEBHOOK_SECRET=secret,
        CDS_WATCH_SUBSCRIPTIONS=False,
        CDS_PUBLIC_BASE_URL="http://127.0.0.1:9",
    )
    state, web = state_of(app), app.test_client()
    courses = [course(CLASSIC), course("si-units")]
    for replay in courses:
        put_all(stack, replay.static)
        answer = web.post(
            "/watch/api/enroll", json={"patientId": replay.patient_id, "fhirServer": stack.fhir_base}
        )
        assert answer.status_code == 201 and answer.get_json()["status"] is None
    assert (
        web.post(
            "/watch/api/enroll", json={"patientId": CLASSIC, "fhirServer": stack.fhir_base + "/"}
        ).status_code
        == 200
    )  # the same server, written differently: already watched
    expected = {replay.patient_id: oracle(replay, ROUNDS) for replay in courses}
    assert ("met", 2) in expected[CLASSIC] and expected[CLASSIC][0][0] == "not-met"
    previous: datetime | None = None
    for i, at in enumerate(ROUNDS):
        for replay in courses:
            put_all(stack, replay.until(previous, at))
        previous = at
        cycle, delivery = state.cycle(full=True, at=at)
        assert (cycle.claimed, cycle.failed, cycle.lost_leases) == (2, 0, 0)
        assert cycle.evaluated == 2  # new results for both at every round
        listed = {p["patientId"]: p for p in web.get("/watch/api/patients").get_json()["patients"]}
        for replay in courses:
            row = listed[replay.patient_id]
            assert (row["status"], row["grade"]) == expected[replay.patient_id][i], (replay.patient_id, at)
            assert row["dayPostInfusion"] == (at.date() - datetime(2026, 3, 2).date()).days
            assert row["problem"] is None and row["lastEvaluated"] and row["ferritin"]
        for entry in state.store.active():  # the schedule tightens while possible or met
            interval = 300 if entry.status in ("possible", "met") else 900
            assert entry.last_polled is not None and entry.next_due - entry.last_polled == interval
        assert delivery.failed == 0
    bodies = received(receiver, secret)
    for replay in courses:
        assert by_patient(bodies, replay.patient_id) == expected_changes(expected[replay.patient_id])
    assert len({b["changeId"] for b in bodies}) == len(bodies) == len(receiver.notifications)
    classic = [b for b in bodies if b["patientId"] == CLASSIC]
    assert classic and classic[-1]["current"]["status"] == "met"  # the course ends in IEC-HS
    assert set(classic[0]) == {
        "type",
        "changeId",
        "patientId",
        "fhirServer",
        "previous",
        "current",
        "evaluatedAt",
        "dashboardUrl",
        "worklistUrl",
    }  # the patient by id only
    assert classic[-1]["dashboardUrl"].startswith("http://127.0.0.1:9/smart/worklist/open/")
    # The page lists the most urgent first and links each patient by its watch entry, not its id.
    page = web.get("/smart/worklist").get_data(as_text=True)
    assert page.index('data-status="met"') < page.index("</tbody>") and 'http-equiv="refresh"' in page
    assert f"/open/{CLASSIC}" not in page
    # Nothing new: a cycle polls, evaluates nothing and notifies nothing.
    cycle, delivery = state.cycle(full=True, at=ROUNDS[-1])
    assert (cycle.unchanged, cycle.evaluated, delivery.sent) == (2, 0, 0)
    assert cycle.fhir_requests == 12  # the patient read and five searches each
    # `cds-service watch --once` on the same database: the same answer from another process.
    summary = run_once(tmp_path, stack, client, f"sqlite:///{tmp_path / 'feedback.sqlite3'}", ROUNDS[-1])
    assert (summary["patients"], summary["unchanged"], summary["changes"]) == (2, 2, 0)
    metrics = web.get("/metrics").get_data(as_text=True)
    assert 'cds_watch_patients{status="met"} 2.0' in metrics
    assert 'cds_watch_outbox{channel="webhook",state="sent"}' in metrics
    # Leaving on request: no longer listed, and a later poll leaves it alone.
    left = web.post("/watch/api/unenroll", json={"patientId": "si-units", "fhirServer": stack.fhir_base})
    assert left.status_code == 200
    assert [p["patientId"] for p in web.get("/watch/api/patients").get_json()["patients"]] == [CLASSIC]


def run_once(
    workdir: Path, stack: FhirStack, client: BackendClient, database_url: str, at: datetime, **env: str
) -> dict[str, Any]:
    servers = workdir / "watch-servers.json"
    if not servers.exists():
        servers_file(workdir, stack, client)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "DATABASE_URL"}
    process = subprocess.run(
        [str(CLI), "watch", "--once", "--format", "json", "--at", at.isoformat()],
        env={
            **clean,
            "CDS_DEV_MODE": "1",
            "DATABASE_URL": database_url,
            "CDS_WATCH_SERVERS_FILE": str(servers),
            "CDS_WATCH_SUBSCRIPTIONS": "0",
            "CDS_WATCH_POLL_OVERLAP_S": "1",
            **env,
        },
        cwd=workdir,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr.decode()[-2000:]
    summary: dict[str, Any] = json.loads(process.stdout.decode().strip().splitlines()[-1])
    return summary


def test_a_hook_call_enrols_a_car_t_patient_with_the_minimum(
    stack: FhirStack, client: BackendClient, tmp_path: Path
) -> None:
    replay = course("messy-data")
    put_all(stack, replay.static + replay.until(None, ROUNDS[-1]))
    other = course("non-car-t-high-ferritin")
    put_all(stack, other.static + other.until(None, datetime.fromisoformat("2026-02-18T20:00:00+00:00")))
    app = watch_app(tmp_path, servers_file(tmp_path, stack, client), CDS_WATCH_SUBSCRIPTIONS=False)
    web = app.test_client()

    def call(patient: str, at: str, server: str = stack.fhir_base) -> None:
        body = hook_body("patient-view", patient, fhir_server=server, token=stack.token)
        response = web.post(
            "/cds-services/iec-hs-screening", json=body, headers={"X-CDS-Evaluation-Instant": at}
        )
        assert response.status_code == 200

    call(replay.patient_id, "2026-03-14T12:00:00Z")
    call(other.patient_id, "2026-02-18T20:00:00Z")  # no CAR-T therapy: not enrolled
    (row,) = web.get("/watch/api/patients").get_json()["patients"]
    assert row["patientId"] == replay.patient_id and row["enrolledBy"] == "hook"
    assert row["infusion"] == "2026-03-02T10:00:00Z" and row["status"] is None
    call(replay.patient_id, "2026-03-14T13:00:00Z")  # again: still one row
    assert len(web.get("/watch/api/patients").get_json()["patients"]) == 1
    engine = create_engine(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    with engine.connect() as connection:
        for table in ("watch_patients", "watch_changes", "watch_outbox"):
            dump = json.dumps(
                [list(r) for r in connection.execute(text(f"SELECT * FROM {table}"))], default=str
            )
            assert stack.token not in dump
    engine.dispose()
    state = state_of(app)
    cycle, _ = state.cycle(full=True, at=ROUNDS[-1])
    assert cycle.evaluated == 1
    assert web.get("/watch/api/patients").get_json()["patients"][0]["status"] == "met"


PG_PATIENTS = [CLASSIC, "si-units", "messy-data", "pop-07"]
PG_ROUNDS = [ROUNDS[2], ROUNDS[4], ROUNDS[6]]


def test_two_watcher_processes_on_postgresql_evaluate_and_notify_each_change_once(
    stack: FhirStack,
    client: BackendClient,
    receiver: RestHookReceiver,
    tmp_path: Path,
    postgres_database_url: str,
) -> None:
    secret = new_secret()
    pg = tmp_path / "pg"
    pg.mkdir()
    app = watch_app(
        pg,
        servers_file(pg, stack, client),
        DATABASE_URL=postgres_database_url,
        CDS_WATCH_SUBSCRIPTIONS=False,
    )
    try:
        web = app.test_client()
        courses = [renamed(course(name), f"pg-{name}", "pg-") for name in PG_PATIENTS]
        for replay in courses:
            put_all(stack, replay.static)
            enrol = {"patientId": replay.patient_id, "fhirServer": stack.fhir_base}
            assert web.post("/watch/api/enroll", json=enrol).status_code == 201
        expected = {c.patient_id: oracle(c, PG_ROUNDS) for c in courses}
        env = {
            "CDS_WATCH_WEBHOOK_URL": receiver.url,
            "CDS_WATCH_WEBHOOK_SECRET": secret,
            "CDS_WATCH_CONCURRENCY": "1",
        }
        previous: datetime | None = None
        evaluated = 0
        for i, at in enumerate(PG_ROUNDS):
            fresh = sum(
                1 for replay in courses if put_all(stack, replay.until(previous, at)) or previous is None
            )
            previous = at
            processes = [start_once(pg, postgres_database_url, at, env) for _ in range(2)]
            summaries = [finish(p) for p in processes]
            # Each patient's new results are evaluated by exactly one of the two. (A process whose cycle began
            # after the other had polled a patient may poll it once more: it finds nothing new.)
            assert (
                sum(s["evaluated"] for s in summaries) == fresh
            )  # patients with new results (all, at first)
            assert sum(s["patients"] - s["evaluated"] for s in summaries) == sum(
                s["unchanged"] for s in summaries
            )
            assert sum(s["lostLeases"] for s in summaries) == 0
            evaluated += fresh
            rows = {p["patientId"]: p for p in web.get("/watch/api/patients").get_json()["patients"]}
            for replay in courses:
                assert (rows[replay.patient_id]["status"], rows[replay.patient_id]["grade"]) == expected[
                    replay.patient_id
                ][i]
        engine = create_engine(postgres_database_url)
        with engine.connect() as connection:
            total = connection.execute(text("SELECT SUM(evaluations) FROM watch_patients")).scalar_one()
        engine.dispose()
        assert total == evaluated
        bodies = received(receiver, secret)
        for replay in courses:
            assert by_patient(bodies, replay.patient_id) == expected_changes(expected[replay.patient_id])
        assert len({b["changeId"] for b in bodies}) == len(bodies) > 0

    finally:
        dispose(app)


def start_once(
    workdir: Path, database_url: str, at: datetime, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "DATABASE_URL"}
    return subprocess.Popen(
        [str(CLI), "watch", "--once", "--format", "json", "--at", at.isoformat()],
        env={
            **clean,
            "CDS_DEV_MODE": "1",
            "DATABASE_URL": database_url,
            "CDS_WATCH_SERVERS_FILE": str(workdir / "watch-servers.json"),
            "CDS_WATCH_SUBSCRIPTIONS": "0",
            "CDS_WATCH_POLL_OVERLAP_S": "1",
            **env,
        },
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return summary
