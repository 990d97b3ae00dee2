"""Scenario patients (fixtures/scenarios): each expected outcome, derived by hand from the published
criteria and the generated data (see each file's `why`), holds for the engine's JSON document."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.engine import evaluate
from cds_service.engine.instruments.registry import HLH2004, HSCORE, IEC_HS
from cds_service.engine.serialize import to_jsonable
from tests.engine_helpers import KB

SCENARIOS = Path(__file__).parent.parent / "fixtures" / "scenarios"
EXPECTED = sorted(SCENARIOS.glob("*.expected.json"))
# The raw-only twins (no CRS or finding Conditions, no documented rows): their expectations are the coded
# scenario's, or their `why` says why not (tests/test_fixtures_raw.py checks that).
RAW_EXPECTED = sorted((SCENARIOS.parent / "scenarios-raw").glob("*.expected.json"))


def resolve(document: Any, path: str) -> Any:
    """`a.b.c` into nested dicts; `list[].field` maps over a list."""
    current = document
    for part in path.split("."):
        if part.endswith("[]"):
            current = current[part[:-2]]
            continue
        current = [item[part] for item in current] if isinstance(current, list) else current[part]
    return current


def check(document: Any, key: str, expected: Any) -> None:
    path, _, op = key.partition(" ")
    actual = resolve(document, path)
    if op == "":
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif op == ">=":
        assert actual >= expected, f"{path}: {actual!r} < {expected!r}"
    elif op == "<":
        assert actual < expected, f"{path}: {actual!r} >= {expected!r}"
    elif op == "includes":
        assert set(expected) <= set(actual), f"{path}: {actual!r} lacks {expected!r}"
    elif op == "excludes":
        assert not set(expected) & set(actual), f"{path}: {actual!r} has {expected!r}"
    else:
        raise AssertionError(f"unknown operator {op!r} in an expected file")


def test_there_are_at_least_eight_scenarios() -> None:
    names = {p.name.removesuffix(".expected.json") for p in EXPECTED}
    assert len(names) >= 8
    assert {p.name.removesuffix("-raw.expected.json") for p in RAW_EXPECTED} == names
    assert {
        "classic-iec-hs",
        "crs-only-early",
        "late-bcma",
        "pediatric-ball",
        "si-units",
        "missing-key-labs",
        "non-car-t-high-ferritin",
        "messy-data",
    } <= names


@pytest.mark.parametrize(
    "expected_file",
    EXPECTED + RAW_EXPECTED,
    ids=[p.name.removesuffix(".expected.json") for p in EXPECTED + RAW_EXPECTED],
)
def test_scenario_outcome(expected_file: Path) -> None:
    spec = json.loads(expected_file.read_text())
    bundle = json.loads((expected_file.parent / spec["bundle"]).read_text())
    at = datetime.fromisoformat(spec["at"])
    document = to_jsonable(evaluate(bundle, at=at, knowledge=KB))
    for key, expected in spec["expect"].items():
        check(document, key, expected)


def test_messy_data_problems_are_reported_not_used() -> None:
    spec = json.loads((SCENARIOS / "messy-data.expected.json").read_text())
    bundle = json.loads((SCENARIOS / "messy-data.json").read_text())
    result = evaluate(bundle, at=datetime.fromisoformat(spec["at"]), knowledge=KB)
    problems = " | ".join(issue.problem for issue in result.data_quality.issues)
    for fragment in ("entered-in-error", "cancelled", "duplicate", "mg/furlong"):
        assert fragment in problems
    assert max(v.value for v in result.labs["ferritin"]) < 100000


def test_si_units_scenario_matches_the_conventional_one() -> None:
    def key_values(name: str) -> dict[str, Any]:
        spec = json.loads((SCENARIOS / f"{name}.expected.json").read_text())
        result = evaluate(
            json.loads((SCENARIOS / f"{name}.json").read_text()),
            at=datetime.fromisoformat(spec["at"]),
            knowledge=KB,
        )
        i = result.instruments
        return {
            "status": IEC_HS.result(i).status,
            "grade": IEC_HS.result(i).grade,
            "hscore": HSCORE.result(i).score,
            "hlh2004": (HLH2004.result(i).met_count, HLH2004.result(i).unknown_count),
        }

    assert key_values("si-units") == key_values("classic-iec-hs")
