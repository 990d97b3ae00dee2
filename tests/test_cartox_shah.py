"""CARTOX (Neelapu 2018), Shah 2020 and the CTCAE v5 grade >= 3 organ criteria they use."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.engine.instruments.registry import CARTOX, SHAH
from tests.engine_helpers import criterion, lab, run, text_finding
from tests.fhir_builders import crs, day, procedure


def cartox(*resources: dict[str, Any], **kw: Any) -> Any:
    return CARTOX.result(run(*resources, **kw).instruments)


@pytest.mark.parametrize(
    ("value", "on_day", "expected"),
    [
        (10000, 3, "not-met"),
        (10001, 3, "met"),
        (20000, 5.4, "met"),
        (20000, 5.6, "not-met"),
    ],
)
def test_cartox_strict_ferritin_window_days_0_to_5(value: float, on_day: float, expected: str) -> None:
    # Days are calendar days after the 12:00 infusion: day(5.4) is still day +5, day(5.6) is day +6.
    early = lab("ferritin", 5000, "ng/mL", 2)
    result = cartox(early, lab("ferritin", value, "ng/mL", on_day), at=day(8))
    assert criterion(result.criteria, "ferritin").status == expected
    assert result.mode == "strict"


def test_cartox_permissive_mode_uses_ferritin_during_crs() -> None:
    resources = [crs(2, day(8), day(14)), lab("ferritin", 30000, "ng/mL", 12)]
    assert criterion(cartox(*resources).criteria, "ferritin").status == "unknown"  # strict: no day 0-5 value
    permissive = cartox(*resources, cartox_mode="permissive")
    assert criterion(permissive.criteria, "ferritin").status == "met"


@pytest.mark.parametrize(
    ("ast", "baseline", "expected"),
    [
        (200, None, "not-met"),
        (201, None, "met"),  # > 5 x ULN 40, baseline unknown (graded against ULN)
        (200, 30, "not-met"),
        (201, 30, "met"),  # baseline normal: > 5 x ULN
        (300, 60, "not-met"),
        (301, 60, "met"),  # baseline abnormal (> ULN): > 5 x baseline
    ],
)
def test_liver_grade3_transaminases(ast: float, baseline: float | None, expected: str) -> None:
    resources = [
        lab("ast", ast, "U/L", 4, high=40),
        lab("alt", 20, "U/L", 4, high=40),
        lab("bilirubin", 0.5, "mg/dL", 4, high=1.2),
    ]
    if baseline is not None:
        resources.append(lab("ast", baseline, "U/L", -1, high=40))
    assert criterion(cartox(*resources, at=day(6)).criteria, "liver").status == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (3.6, "mg/dL", "not-met"),
        (3.61, "mg/dL", "met"),
        (61.5, "umol/L", "not-met"),
        (62, "umol/L", "met"),
    ],
)
def test_liver_grade3_bilirubin(value: float, unit: str, expected: str) -> None:
    # > 3 x ULN 1.2 mg/dL = 3.6 mg/dL (61.56 umol/L at 17.1 umol/L per mg/dL)
    resources = [
        lab("bilirubin", value, unit, 4, high=1.2 if unit == "mg/dL" else 20.52),
        lab("ast", 20, "U/L", 4, high=40),
        lab("alt", 20, "U/L", 4, high=40),
    ]
    assert criterion(cartox(*resources, at=day(6)).criteria, "liver").status == expected


@pytest.mark.parametrize(("value", "expected"), [(3.0, "not-met"), (3.01, "met")])
def test_kidney_grade3_creatinine_over_3x_baseline(value: float, expected: str) -> None:
    resources = [
        lab("creatinine", 1.0, "mg/dL", -1, high=1.2),
        lab("creatinine", value, "mg/dL", 4, high=1.2),
    ]
    assert criterion(cartox(*resources, at=day(6)).criteria, "kidney").status == expected


def test_lung_proxy_and_ventilation() -> None:
    hypoxia = [lab("spo2", 87, "%", 4), lab("o2_flow", 4, "L/min", 4)]
    assert criterion(cartox(*hypoxia, at=day(6)).criteria, "lung").status == "met"
    no_support = [lab("spo2", 87, "%", 4)]
    assert criterion(cartox(*no_support, at=day(6)).criteria, "lung").status == "not-met"
    boundary = [lab("spo2", 88, "%", 4), lab("o2_flow", 4, "L/min", 4)]
    assert criterion(cartox(*boundary, at=day(6)).criteria, "lung").status == "not-met"  # SpO2 < 88 strict
    ventilated = [procedure("Mechanical ventilation", day(4))]
    assert criterion(cartox(*ventilated, at=day(6)).criteria, "lung").status == "met"
    assert criterion(cartox(at=day(6)).criteria, "lung").status == "unknown"


def test_cartox_fulfilled_logic() -> None:
    organ_labs = [
        lab("ast", 400, "U/L", 4, high=40),
        lab("creatinine", 1.0, "mg/dL", -1, high=1.2),
        lab("creatinine", 4.0, "mg/dL", 4, high=1.2),
    ]
    met = cartox(lab("ferritin", 15000, "ng/mL", 3), *organ_labs, at=day(6))
    assert (met.organ_met_count, met.fulfilled) == (2, True)
    low = cartox(lab("ferritin", 9000, "ng/mL", 3), *organ_labs, at=day(6))
    assert low.fulfilled is False
    one_organ = cartox(lab("ferritin", 15000, "ng/mL", 3), organ_labs[0], at=day(6))
    assert one_organ.fulfilled is None  # kidney, lung, hemophagocytosis unknown could still add one


@pytest.mark.parametrize(("value", "expected"), [(100000, "not-met"), (100001, "met")])
def test_shah_ferritin_over_100000(value: float, expected: str) -> None:
    result = SHAH.result(run(lab("ferritin", value, "ug/L", 10), at=day(12)).instruments)
    assert criterion(result.criteria, "ferritin").status == expected
    assert result.unverified


def test_shah_counts_only_marrow_hemophagocytosis() -> None:
    spleen = SHAH.result(run(text_finding("Hemophagocytosis in spleen"), at=day(12)).instruments)
    assert criterion(spleen.criteria, "hemophagocytosis").status == "unknown"
    marrow = SHAH.result(run(text_finding("Hemophagocytosis in bone marrow"), at=day(12)).instruments)
    assert criterion(marrow.criteria, "hemophagocytosis").status == "met"
