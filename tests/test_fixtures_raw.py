"""Raw-only twins (fixtures/scenarios-raw, fixtures/population-raw): the coded data minus the Conditions
that code CRS or a clinical finding and minus the documented-grade rows, under their own ids, with the
same labels and the same expectations."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fixtures.gen import terminology as term
from fixtures.gen.scenarios import SCENARIOS
from fixtures.gen.twins import coded_finding, documented_row, raw_id, raw_patient_id
from fixtures.generate import FIXTURES_DIR

Resource = dict[str, Any]
PAIRS = [
    (FIXTURES_DIR / "scenarios" / f"{s.name}.json", FIXTURES_DIR / "scenarios-raw" / f"{s.name}-raw.json")
    for s in SCENARIOS
] + [
    (p, FIXTURES_DIR / "population-raw" / p.name)
    for p in sorted((FIXTURES_DIR / "population").glob("patient-*.json"))
]
# Index fields that describe the twin itself rather than the course.
TWIN_FIELDS = {"id", "rawTwinOf", "removedFromCoded", "resourceCount", "observationCount", "dataQuality"}


@cache
def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def resources(path: Path) -> list[Resource]:
    return [e["resource"] for e in load(path)["entry"]]


def back(twin: Resource, pid: str) -> Resource:
    """The coded resource a twin came from (its id, references and MRN mapped back)."""
    text = json.dumps(twin).replace(f'"Patient/{raw_patient_id(pid)}"', f'"Patient/{pid}"')
    out: Resource = json.loads(text)
    out["id"] = pid + twin["id"].removeprefix(raw_patient_id(pid))
    if out["resourceType"] == "Patient":
        for ident in out["identifier"]:
            ident["value"] = ident["value"].removesuffix("-RAW")
    return out


@pytest.mark.parametrize(("coded", "raw"), PAIRS, ids=[f"{c.parent.name}/{c.name}" for c, _ in PAIRS])
def test_twin_is_the_coded_data_minus_coded_findings_and_documented_rows(coded: Path, raw: Path) -> None:
    original, twin = resources(coded), resources(raw)
    pid = original[0]["id"]
    kept = [r for r in original if coded_finding(r) is None and documented_row(r) is None]
    assert len(twin) == len(kept)
    for c, t in zip(kept, twin, strict=True):
        assert t["id"] == raw_id(pid, c["id"])
        assert back(t, pid) == c
    assert f'"Patient/{pid}"' not in raw.read_text(encoding="utf-8")
    assert load(raw)["timestamp"] == load(coded)["timestamp"]
    # the underlying disease stays
    assert any(r["resourceType"] == "Condition" and r["id"].endswith("-cond-dx") for r in twin) == any(
        r["resourceType"] == "Condition" and r["id"].endswith("-cond-dx") for r in original
    )


def test_twins_leave_out_every_kind_of_coded_or_documented_record() -> None:
    removed_codes: set[str] = set()
    removed_rows: set[str] = set()
    for coded, _ in PAIRS:
        for r in resources(coded):
            code, row = coded_finding(r), documented_row(r)
            removed_codes |= {code} if code else set()
            removed_rows |= {row} if row else set()
    assert {"D89.831", "D89.832", "D89.833", "D89.834", "D76.1", "131148009"} <= removed_codes
    assert {"G92.02", "G92.03"} <= removed_codes
    assert removed_rows == {code for code, _ in term.FLOWSHEET_ROWS.values()}


@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_raw_expected_file_keeps_the_expectations_or_says_why(scenario: str) -> None:
    coded = load(FIXTURES_DIR / "scenarios" / f"{scenario}.expected.json")
    raw = load(FIXTURES_DIR / "scenarios-raw" / f"{scenario}-raw.expected.json")
    assert raw["rawTwinOf"] == scenario and raw["at"] == coded["at"]
    assert raw["patient"] == f"Patient/{raw_patient_id(coded['patient'].removeprefix('Patient/'))}"
    assert raw["why"]["raw twin"].startswith(f"raw-only twin of {scenario}:")
    for key, value in coded["expect"].items():
        if key in raw["expect"]:
            assert raw["expect"][key] == value or key in raw["why"]
        else:
            assert key in raw["why"]["raw twin"], f"{key} left out without a reason"


def test_raw_index_has_the_same_labels() -> None:
    coded = load(FIXTURES_DIR / "population" / "index.json")["patients"]
    raw = load(FIXTURES_DIR / "population-raw" / "index.json")["patients"]
    assert len(coded) == len(raw)
    for c, r in zip(coded, raw, strict=True):
        assert r["id"] == raw_patient_id(c["id"]) and r["rawTwinOf"] == c["id"]
        same = {k: v for k, v in r.items() if k not in TWIN_FIELDS | {"rawNotes"}}
        assert same == {k: v for k, v in c.items() if k not in TWIN_FIELDS}
        assert [t["id"] for t in r["dataQuality"]] == [raw_id(c["id"], t["id"]) for t in c["dataQuality"]]
    bleeding = [r for r in raw if r["iecHs"] and r["iecHs"]["variant"] == "bleeding"]
    assert bleeding and all("bleeding Condition" in " ".join(r["rawNotes"]) for r in bleeding)
