"""Helpers for the watch-list tests: a watcher's servers file and key, scenario courses replayed onto the
FHIR test stack in the order their results became available, and a development-mode app that watches."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine.evaluate import evaluate_at
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.record import read_record
from cds_service.watch import WatchState, watch_state
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config
from tests.plugins.fhir_stack import FhirStack
from tests.plugins.smart_backend import BackendClient, generate_backend_client

SCENARIOS = PROJECT_ROOT / "fixtures" / "scenarios"
WATCH_SCOPE = (
    "system/Patient.rs system/Observation.rs system/Condition.rs system/Procedure.rs "
    "system/MedicationAdministration.rs system/MedicationRequest.rs system/Subscription.cruds "
    "system/Communication.cs system/Flag.cs"
)


def new_secret() -> str:
    """A Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def watcher_client(client_id: str = "cds-watch", alg: str = "ES384") -> BackendClient:
    return generate_backend_client(client_id, alg=alg, scope=WATCH_SCOPE)


def servers_file(
    directory: Path, stack: FhirStack, client: BackendClient, *, scopes: str | None = None, **extra: Any
) -> Path:
    """The watcher's CDS_WATCH_SERVERS_FILE for `stack`, with the client's private key next to it."""
    key = directory / f"{client.client_id}-key.pem"
    key.write_text(client.private_key_pem(), encoding="utf-8")
    key.chmod(0o600)
    server: dict[str, Any] = {
        "fhir_server": stack.fhir_base,
        "name": "Test EHR",
        "client_id": client.client_id,
        "private_key_file": key.name,
        **extra,
    }
    if scopes is not None:
        server["scopes"] = scopes
    path = directory / "watch-servers.json"
    path.write_text(json.dumps({"servers": [server]}), encoding="utf-8")
    return path


def watch_app(tmp_path: Path, servers: Path, **extra: Any) -> Flask:
    """A development-mode app that watches (no scheduler: tests drive the cycles)."""
    config = dev_config(
        tmp_path,
        CDS_WATCH_SERVERS_FILE=str(servers),
        CDS_WATCH_SCHEDULER=False,
        CDS_WATCH_POLL_OVERLAP_S=1,
        **extra,
    )
    return create_app(config)


def dispose(app: Flask) -> None:
    """Close the app's database connections (PostgreSQL tests drop their database afterwards)."""
    get_state(app).feedback.engine.dispose()
    state_of(app).store.engine.dispose()


def state_of(app: Flask) -> WatchState:
    state = watch_state(app)
    assert state is not None
    return state


def scenario_bundle(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCENARIOS / f"{name}.json").read_text(encoding="utf-8"))
    return document


def _available(resource: dict[str, Any]) -> datetime:
    """When a result became available: `issued`, else its effective time."""
    value = resource.get("issued") or resource.get("effectiveDateTime") or "1970-01-01T00:00:00Z"
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Course:
    """A scenario split into what exists from the start (patient, drugs, Conditions, Procedures) and its
    Observations in the order they became available."""

    patient_id: str
    static: list[dict[str, Any]]
    observations: list[tuple[datetime, dict[str, Any]]]

    def until(self, after: datetime | None, until: datetime) -> list[dict[str, Any]]:
        """The Observations that became available in (after, until]."""
        return [r for t, r in self.observations if (after is None or t > after) and t <= until]


def course(name: str) -> Course:
    """A scenario's course (fixtures/scenarios/<name>.json), or a population patient's (pop-NN)."""
    if name.startswith("pop-"):
        path = PROJECT_ROOT / "fixtures" / "population" / f"patient-{name.removeprefix('pop-')}.json"
        return course_of_bundle(json.loads(path.read_text(encoding="utf-8")))
    return course_of_bundle(scenario_bundle(name))


def course_of_bundle(document: dict[str, Any]) -> Course:
    bundle = document.get("bundle", document)
    resources = [entry["resource"] for entry in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observations = sorted(
        ((_available(r), r) for r in resources if r["resourceType"] == "Observation"),
        key=lambda item: (item[0], item[1]["id"]),
    )
    static = [r for r in resources if r["resourceType"] != "Observation"]
    return Course(str(patient["id"]), static, observations)


def renamed(replay: Course, patient_id: str, prefix: str) -> Course:
    """The course under another patient id, every other id prefixed (tests sharing one FHIR server)."""
    old = f'"Patient/{replay.patient_id}"'
    raw = json.dumps({"static": replay.static, "obs": [r for _, r in replay.observations]})
    data = json.loads(raw.replace(old, f'"Patient/{patient_id}"'))
    for resource in [*data["static"], *data["obs"]]:
        is_patient = resource["resourceType"] == "Patient"
        resource["id"] = patient_id if is_patient else f"{prefix}{resource['id']}"[:64]
    times = [t for t, _ in replay.observations]
    return Course(patient_id, data["static"], list(zip(times, data["obs"], strict=True)))


def engine_statuses(replay: Course, instants: Iterable[datetime]) -> list[tuple[str, int | None]]:
    """The oracle: (IEC-HS status, grade) at each instant from the engine alone, without a FHIR server, on
    the data that were available then."""
    kb = load_knowledge()
    out = []
    for at in instants:
        result = evaluate_at(read_record(replay.static + replay.until(None, at), knowledge=kb), at)
        iec = IEC_HS.result(result.instruments)
        out.append((str(iec.status), iec.grade))
    return out


def first_rise(replay: Course, start: datetime, end: datetime, step: timedelta) -> tuple[datetime, datetime]:
    """(quiet, rise): the last instant on the grid with IEC-HS neither possible nor met, and the first one
    with it possible or met after that (the engine decides, so the tests follow its course)."""
    grid = [start + i * step for i in range(int((end - start) / step) + 1)]
    statuses = engine_statuses(replay, grid)
    for i, (status, _) in enumerate(statuses):
        if status in ("possible", "met") and i > 0:
            return grid[i - 1], grid[i]
    raise AssertionError(f"no rise of IEC-HS between {start} and {end}: {statuses}")


def put_all(stack: FhirStack, resources: Iterable[dict[str, Any]]) -> int:
    """PUT the resources as one batch (ids kept); returns how many."""
    items = list(resources)
    if not items:
        return 0
    stack.load_bundle(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in items
            ],
        }
    )
    return len(items)


def instants(start: str, *rest: str) -> Iterator[datetime]:
    for value in (start, *rest):
        yield datetime.fromisoformat(value).astimezone(UTC)
