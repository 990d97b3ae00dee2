"""Nothing from the future: evaluating the full record at instant T gives the same result as evaluating the
record as it existed at T (where the record carries the times to tell).

`as_of` rebuilds that record from FHIR semantics alone (not from the engine): resources created after T are
gone, a result issued after T did not exist yet, a Condition abated after T was still active then, an
infusion or procedure ending after T was still running, a death after T had not happened.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.engine.evaluate import evaluate_at
from cds_service.engine.record import read_record
from cds_service.engine.serialize import to_jsonable
from tests.engine_helpers import KB

ROOT = Path(__file__).resolve().parents[1]
COURSES = (
    sorted((ROOT / "fixtures" / "population").glob("patient-*.json"))[::3]
    + sorted((ROOT / "fixtures" / "population-raw").glob("patient-*.json"))[1::3]
    + sorted((ROOT / "fixtures" / "scenarios").glob("*.json"))
    + sorted((ROOT / "fixtures" / "scenarios-raw").glob("*.json"))
)
COURSES = [p for p in COURSES if not p.name.endswith(".expected.json")]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00") if "T" in value else value + "T00:00:00+00:00")


def _start(resource: dict[str, Any], *names: str) -> datetime | None:
    for name in names:
        value = resource.get(name)
        found = _time(value.get("start") if isinstance(value, dict) else value)
        if found is not None:
            return found
    return None


def _cut_period(resource: dict[str, Any], name: str, at: datetime) -> None:
    period = resource.get(name)
    if isinstance(period, dict) and (end := _time(period.get("end"))) is not None and end > at:
        del period["end"]
        resource["status"] = "in-progress"


def _existed(resource: dict[str, Any], at: datetime) -> bool:
    kind = resource.get("resourceType")
    if kind == "Observation":
        when = _start(resource, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
        issued = _time(resource.get("issued"))
        return when is not None and when <= at and (issued is None or issued <= at)
    if kind == "Condition":
        recorded = _time(resource.get("recordedDate"))
        onset = _start(resource, "onsetDateTime", "onsetPeriod") or recorded
        return onset is not None and onset <= at and (recorded is None or recorded <= at)
    if kind in {"MedicationAdministration", "MedicationStatement"}:
        when = _start(resource, "effectiveDateTime", "effectivePeriod")
        return when is not None and when <= at
    if kind == "MedicationRequest":
        when = _time(resource.get("authoredOn"))
        return when is not None and when <= at
    if kind == "Procedure":
        when = _start(resource, "performedDateTime", "performedPeriod")
        return when is not None and when <= at
    return True


def _as_it_was(resource: dict[str, Any], at: datetime) -> dict[str, Any]:
    resource = copy.deepcopy(resource)
    kind = resource.get("resourceType")
    if kind == "Condition":
        abated = _start(resource, "abatementDateTime", "abatementPeriod")
        if abated is not None and abated > at:
            resource.pop("abatementDateTime", None)
            resource.pop("abatementPeriod", None)
            resource["clinicalStatus"] = {"coding": [{"code": "active"}]}
    elif kind in {"MedicationAdministration", "MedicationStatement"}:
        _cut_period(resource, "effectivePeriod", at)
    elif kind == "Procedure":
        _cut_period(resource, "performedPeriod", at)
    elif kind == "Patient":
        died = _time(resource.get("deceasedDateTime"))
        if died is not None and died > at:
            del resource["deceasedDateTime"]
    return resource


def as_of(bundle: dict[str, Any], at: datetime) -> dict[str, Any]:
    entries = [e for e in bundle["entry"] if _existed(e["resource"], at)]
    return {**bundle, "entry": [{**e, "resource": _as_it_was(e["resource"], at)} for e in entries]}


def clinical(result: Any) -> dict[str, Any]:
    """What the result says about the patient (not the bookkeeping of how many resources were read)."""
    document = to_jsonable(result)
    return {
        key: document[key] for key in ("therapy", "crs", "crsStatus", "instruments", "missingData", "patient")
    }


@pytest.mark.parametrize("path", COURSES, ids=lambda p: f"{p.parent.name}/{p.stem}")
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.floats(min_value=0.5, max_value=30.0))
def test_the_full_record_at_t_equals_the_record_as_it_was_at_t(path: Path, offset: float) -> None:
    bundle = json.loads(path.read_text())
    record = read_record(bundle, knowledge=KB)
    if not record.infusions:
        return
    at = record.infusions[0].time + timedelta(days=offset)
    full = evaluate_at(record, at)
    # The same queries were answered then, some with nothing yet: the kinds of data asked for are the same.
    past = replace(read_record(as_of(bundle, at), knowledge=KB), supplied_types=record.supplied_types)
    then = evaluate_at(past, at)
    assert clinical(full) == clinical(then)


def test_as_of_rebuilds_a_condition_abated_later_as_active() -> None:
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"code": "resolved"}]},
        "onsetDateTime": "2026-03-05T00:00:00Z",
        "abatementDateTime": "2026-03-11T00:00:00Z",
    }
    at = datetime.fromisoformat("2026-03-08T00:00:00+00:00")
    then = _as_it_was(condition, at)
    assert "abatementDateTime" not in then and then["clinicalStatus"]["coding"][0]["code"] == "active"
