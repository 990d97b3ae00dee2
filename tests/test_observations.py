"""Observation normalization: units, statuses, times, comparators, ranges, components, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds_service.engine import EngineConfig, evaluate
from cds_service.engine.instruments.registry import HLH2004
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.units import UnitError
from tests.engine_helpers import AT, KB, lab
from tests.fhir_builders import bundle, car_t, day, obs, patient


def normalized(*resources: dict[str, Any]) -> Any:
    return evaluate(bundle(patient(), car_t(), *resources), at=AT, knowledge=KB)


@pytest.mark.parametrize(
    ("analyte", "value", "unit", "canonical"),
    [
        ("fibrinogen", 1.5, "g/L", 150),
        ("fibrinogen", 150, "mg/dL", 150),
        ("fibrinogen", 1500, "mg/L", 150),
        ("triglycerides", 3.0, "mmol/L", 265.71),
        ("triglycerides", 265, "mg/dL", 265),
        ("hemoglobin", 92, "g/L", 9.2),
        ("hemoglobin", 9.2, "g/dL", 9.2),
        ("hemoglobin", 5.71, "mmol/L", 9.2013795),
        ("platelets", 110000, "/uL", 110),
        ("platelets", 110, "10*3/uL", 110),
        ("platelets", 110, "10*9/L", 110),
        ("platelets", 110, "K/uL", 110),
        ("wbc", 5000, "/uL", 5.0),
        ("temperature", 101.1, "[degF]", 38.3888888889),
        ("temperature", 38.4, "Cel", 38.4),
        ("creatinine", 88.4, "umol/L", 0.9999808),
        ("bilirubin_total", 17.1, "umol/L", 0.9997686),
        ("ast", 1, "ukat/L", 60),
        ("ast", 30, "[IU]/L", 30),
        ("ferritin", 500, "ug/L", 500),
        ("crp", 5, "mg/dL", 50),
        ("fio2", 0.4, "1", 40),
        ("inr", 1.3, "{INR}", 1.3),
    ],
)
def test_unit_conversion_to_canonical(analyte: str, value: float, unit: str, canonical: float) -> None:
    assert load_knowledge().units.convert(analyte, value, unit) == pytest.approx(canonical, rel=1e-9)


@pytest.mark.parametrize(
    ("analyte", "unit"),
    [
        ("ferritin", "pmol/L"),  # molar factor UNVERIFIED: rejected rather than guessed
        ("fibrinogen", "umol/L"),
        ("fibrinogen", "g"),
        ("platelets", "mg/dL"),
        ("ferritin", "mg/furlong"),
        ("temperature", "mm[Hg]"),
        ("inr", "s"),
        ("scd25", "pg/mL"),
    ],
)
def test_incompatible_or_unknown_units_are_rejected(analyte: str, unit: str) -> None:
    with pytest.raises(UnitError):
        load_knowledge().units.convert(analyte, 1.0, unit)


def test_excluded_and_flagged_statuses() -> None:
    result = normalized(
        lab("ferritin", 900000, "ng/mL", status="entered-in-error"),
        lab("ferritin", 800000, "ng/mL", status="cancelled"),
        lab("ferritin", 700, "ng/mL", 11, status="preliminary"),
        lab("ferritin", 600, "ng/mL", 10, status="amended"),
    )
    values = sorted(v.value for v in result.labs["ferritin"])
    assert values == [600, 700]
    problems = " ".join(i.problem for i in result.data_quality.issues)
    assert "entered-in-error" in problems and "cancelled" in problems and "preliminary" in problems
    assert next(v for v in result.labs["ferritin"] if v.value == 700).preliminary


def test_effective_period_and_issued_are_used_for_time() -> None:
    period = lab("ferritin", 1000, "ng/mL")
    period.pop("effectiveDateTime")
    period["effectivePeriod"] = {"start": "2026-03-12T06:00:00Z", "end": "2026-03-12T07:00:00Z"}
    issued = lab("fibrinogen", 150, "mg/dL")
    issued.pop("effectiveDateTime")
    issued["issued"] = "2026-03-12T08:00:00Z"
    no_time = lab("ast", 50, "U/L")
    no_time.pop("effectiveDateTime")
    result = normalized(period, issued, no_time)
    assert result.labs["ferritin"][0].time.isoformat() == "2026-03-12T06:00:00+00:00"
    assert result.labs["fibrinogen"][0].time.hour == 8
    assert "ast" not in result.labs
    assert any("no usable effective time" in i.problem for i in result.data_quality.issues)


def test_comparator_is_kept_and_only_decides_when_its_bound_decides() -> None:
    result = normalized(
        lab("crp", 0.5, "mg/L", comparator="<"), lab("ferritin", 100000, "ng/mL", comparator=">")
    )
    crp = result.labs["crp"][0]
    assert (crp.comparator, crp.value) == ("<", 0.5)
    ferritin = next(c for c in HLH2004.result(result.instruments).criteria if c.id == "ferritin")
    assert ferritin.status == "met"  # >100000 is certainly >= 500


@pytest.mark.parametrize("odd", [["<"], {"code": "<"}, 7, "ad"], ids=["array", "object", "number", "ad"])
def test_a_comparator_fhir_does_not_define_reads_as_a_plain_value(odd: Any) -> None:
    """Only <, <=, > and >= censor a value; anything else in `comparator` (an R5 code, a number, an array or
    object, which cannot be looked up) leaves the value as reported."""
    resource = lab("ferritin", 900, "ng/mL")
    resource["valueQuantity"]["comparator"] = odd
    value = normalized(resource).labs["ferritin"][0]
    assert (value.value, value.comparator) == (900, None)


def test_reference_range_used_else_fallback_reported() -> None:
    result = normalized(lab("ferritin", 700, "ng/mL", high=400), lab("ldh", 300, "U/L"))
    assert result.labs["ferritin"][0].high == 400
    assert result.labs["ferritin"][0].range_source == "observation"
    assert result.labs["ldh"][0].high == 250 and result.labs["ldh"][0].range_source == "fallback"
    assert "ldh" in result.data_quality.fallback_ranges


def test_si_reference_range_is_converted() -> None:
    result = normalized(lab("fibrinogen", 1.2, "g/L", low=2.0, high=4.0))
    value = result.labs["fibrinogen"][0]
    assert (value.value, value.low, value.high) == (120, 200, 400)


def test_blood_pressure_components() -> None:
    panel = {
        "resourceType": "Observation",
        "id": "bp1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "effectiveDateTime": "2026-03-12T10:00:00Z",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {
                    "value": 85,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {
                    "value": 45,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
        ],
    }
    result = normalized(panel)
    assert result.labs["bp_systolic"][0].value == 85
    assert result.labs["bp_diastolic"][0].resource_id == "Observation/bp1#component[1]"


def test_duplicates_are_removed_and_reported() -> None:
    original = lab("ferritin", 1000, "ng/mL", rid="dup")
    result = normalized(original, dict(original), lab("ferritin", 1000, "ng/mL", rid="copy"))
    assert len(result.labs["ferritin"]) == 1
    problems = [i.problem for i in result.data_quality.issues]
    assert any("duplicate resource id" in p for p in problems)
    assert any("duplicate of" in p for p in problems)


@pytest.mark.parametrize(
    "bad",
    [
        {"value": "12"},
        {"value": float("nan")},
        {"value": True},
        {"value": 1e300},
        {},
    ],
)
def test_non_numeric_values_are_excluded(bad: dict[str, Any]) -> None:
    resource = lab("ferritin", 1000, "ng/mL")
    resource["valueQuantity"] = {
        **{"unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"},
        **bad,
    }
    result = normalized(resource)
    assert "ferritin" not in result.labs
    assert any("not a finite number" in i.problem for i in result.data_quality.issues)


def test_unknown_unit_excluded_and_reported_with_path() -> None:
    result = normalized(lab("ferritin", 5, "mg/furlong"))
    issue = next(i for i in result.data_quality.issues if "ferritin" in i.problem.lower())
    assert issue.path == "valueQuantity.code"
    assert "ferritin" not in result.labs


def test_future_data_is_ignored_when_at_is_now() -> None:
    from datetime import UTC, datetime, timedelta

    future = obs("2276-4", 99999, "ng/mL", datetime.now(UTC) + timedelta(days=2))
    result = evaluate(bundle(patient(), car_t(), future), knowledge=KB)
    assert "ferritin" not in result.labs
    assert any("future" in i.problem for i in result.data_quality.issues)


def test_prefetch_dict_with_null_and_operation_outcome() -> None:
    prefetch = {
        "patient": patient(),
        "observations": bundle(lab("ferritin", 1000, "ng/mL")),
        "conditions": None,
        "medications": {"resourceType": "OperationOutcome", "issue": []},
        "therapy": bundle(car_t()),
    }
    result = evaluate(prefetch, at=day(13), knowledge=KB)
    assert result.therapy.found and len(result.labs["ferritin"]) == 1
    assert any("prefetch failed" in i.problem for i in result.data_quality.issues)


def test_garbage_entries_do_not_crash() -> None:
    data = {
        "resourceType": "Bundle",
        "entry": [
            1,
            {"resource": "x"},
            {"nope": 1},
            {"resource": {"id": "no-type"}},
            {"resource": {"resourceType": "Observation", "code": "not-a-concept"}},
        ],
    }
    result = evaluate(data, at=day(13), knowledge=KB)
    assert len(result.data_quality.issues) >= 4


def _ferritin_at(when: datetime, rid: str) -> dict[str, Any]:
    return obs("2276-4", 1000, "ng/mL", when, rid=rid)


def _used_and_issues(data: dict[str, Any], at: datetime | None) -> tuple[list[str], list[tuple[str, str]]]:
    result = evaluate(data, at=at, knowledge=KB)
    used = [lab.resource_id.removeprefix("Observation/") for lab in result.labs["ferritin"]]
    return used, [(i.resource, i.problem) for i in result.data_quality.issues]


def test_values_after_an_explicit_instant_are_cut_at_the_exact_boundary() -> None:
    """A value at exactly the evaluation instant is used; one a second later is not, and the later
    ones are counted in one flagged issue (not reported as dated in the future)."""
    later = [timedelta(seconds=1), timedelta(minutes=5), timedelta(days=2)]
    data = bundle(
        patient(),
        car_t(),
        _ferritin_at(AT - timedelta(hours=1), "before"),
        _ferritin_at(AT, "at"),
        *(_ferritin_at(AT + delta, f"later-{n}") for n, delta in enumerate(later)),
    )
    used, issues = _used_and_issues(data, AT)
    assert used == ["before", "at"]
    assert ("3 results", "dated or released after the evaluation instant: not used") in issues
    assert not [problem for _, problem in issues if "future" in problem]


@pytest.mark.parametrize("typed", [True, False], ids=["typed-path", "general-path"])
def test_a_result_counts_from_its_release_not_its_collection(typed: bool) -> None:
    """Drawn an hour before the instant, released a second after it: not on record yet. Released exactly at
    the instant: used. The general path (a preliminary status) reads `issued` the same way."""

    def drawn(rid: str, issued: datetime) -> dict[str, Any]:
        resource = _ferritin_at(AT - timedelta(hours=1), rid)
        resource["valueQuantity"]["value"] = 1000 + len(rid)  # not duplicates of each other
        resource["issued"] = issued.isoformat().replace("+00:00", "Z")
        if not typed:
            resource["status"] = "preliminary"
        return resource

    data = bundle(
        patient(), car_t(), drawn("released-at", AT), drawn("released-later", AT + timedelta(seconds=1))
    )
    used, issues = _used_and_issues(data, AT)
    assert used == ["released-at"]
    assert ("1 results", "dated or released after the evaluation instant: not used") in issues
    used_later, _ = _used_and_issues(data, AT + timedelta(seconds=1))
    assert sorted(used_later) == ["released-at", "released-later"]


def test_values_dated_after_now_are_excluded_and_beyond_the_tolerance_reported() -> None:
    now = datetime.now(UTC)
    tolerance = timedelta(minutes=EngineConfig.from_knowledge(load_knowledge()).future_tolerance_minutes)
    data = bundle(
        patient(),
        car_t(),
        _ferritin_at(now - timedelta(hours=1), "before"),
        _ferritin_at(now + tolerance - timedelta(minutes=1), "within-tolerance"),
        _ferritin_at(now + tolerance + timedelta(minutes=1), "beyond"),
        _ferritin_at(now + timedelta(days=30), "far"),
    )
    used, issues = _used_and_issues(data, None)
    assert used == ["before"]
    future = [resource for resource, problem in issues if problem == "dated in the future: excluded"]
    assert future == ["Observation/beyond", "Observation/far"]
