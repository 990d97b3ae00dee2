"""HScore (Fardet 2014): worked examples, band boundaries in both unit systems, probability table."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.engine.instruments.hscore import band_label, probability
from cds_service.engine.instruments.registry import HSCORE
from cds_service.engine.knowledge import load_knowledge
from tests.engine_helpers import criterion, finding, lab, run, text_finding

HEPATOMEGALY, SPLENOMEGALY, IMMUNOSUPPRESSION = "80515008", "16294009", "38013005"
BM = "Hemophagocytosis in bone marrow aspirate"


def _unit_value(spec: str) -> tuple[float, str]:
    value, unit = spec.split(" ", 1)
    return float(value), unit


def case(
    immuno: bool,
    organ: str,
    cytopenias: int,
    bm: bool,
    temp: str,
    ferritin: str,
    tg: str,
    fib: str,
    ast: float,
) -> list[dict[str, Any]]:
    """A patient whose nine HScore inputs are all known (absent findings are refuted, not missing)."""
    resources = [finding(IMMUNOSUPPRESSION, immuno)]
    resources += [finding(HEPATOMEGALY, organ in {"one", "both"}), finding(SPLENOMEGALY, organ == "both")]
    resources.append(text_finding(BM, bm))
    low = {"hemoglobin": (8.0, "g/dL"), "wbc": (2.0, "10*9/L"), "platelets": (50, "10*9/L")}
    normal = {"hemoglobin": (13.0, "g/dL"), "wbc": (7.0, "10*9/L"), "platelets": (250, "10*9/L")}
    for index, name in enumerate(("hemoglobin", "wbc", "platelets")):
        value, unit = low[name] if index < cytopenias else normal[name]
        resources.append(lab(name, value, unit))
    tg_value, tg_unit = _unit_value(tg)
    tg_code = "triglycerides_mmol" if tg_unit == "mmol/L" else "triglycerides"
    for name, spec in (("temperature", temp), ("ferritin", ferritin), (tg_code, tg), ("fibrinogen", fib)):
        value, unit = _unit_value(spec)
        resources.append(lab(name, value, unit))
    resources.append(lab("ast", ast, "U/L"))
    return resources


# GDL2 HScore.v1.test.yml worked examples (reference 1.5 B). Cytopenia count 1 means one lineage.
WORKED = [
    ("01", True, "both", 3, True, "40 Cel", "7000 ng/mL", "500 mg/dL", "100 mg/dL", 50, 337, ">99%"),
    ("02", False, "no", 1, False, "36 Cel", "1000 ng/mL", "50 mg/dL", "500 mg/dL", 10, 0, "<1%"),
    ("03", False, "no", 1, False, "100 [degF]", "1000 ug/L", "1 mmol/L", "3 g/L", 10, 0, "<1%"),
    ("04", False, "no", 1, False, "102.5 [degF]", "3000 ug/L", "3 mmol/L", "2.5 g/L", 10, 142, "16-25%"),
    ("05", False, "no", 1, False, "39 Cel", "3000 ng/mL", "300 mg/dL", "2.5 g/L", 10, 142, "16-25%"),
    ("06", False, "no", 1, False, "104 [degF]", "7000 ug/L", "5 mmol/L", "2.5 mg/dL", 10, 193, "80-88%"),
    ("07", True, "one", 2, True, "36 Cel", "1000 ng/mL", "1 mmol/L", "3 g/L", 10, 100, "~1%"),
    ("12", True, "one", 2, True, "39 Cel", "1000 ng/mL", "1 mmol/L", "5 g/L", 50, 152, "25-40%"),
    ("13", True, "both", 2, True, "39 Cel", "1000 ng/mL", "1 mmol/L", "5 g/L", 50, 167, "40-54%"),
    ("15", False, "both", 2, True, "39 Cel", "2000 ng/mL", "1 mmol/L", "5 g/L", 50, 184, "70-80%"),
    ("16", True, "both", 2, True, "39 Cel", "2000 ng/mL", "1 mmol/L", "5 g/L", 50, 202, "88-93%"),
    ("18", True, "both", 3, True, "39 Cel", "2000 ng/mL", "1 mmol/L", "2 g/L", 10, 223, "96-98%"),
    ("19", False, "both", 3, True, "40 Cel", "3000 ng/mL", "1 mmol/L", "2 g/L", 50, 240, "98-99%"),
]


@pytest.mark.parametrize("row", WORKED, ids=[r[0] for r in WORKED])
def test_worked_examples_reproduce(row: tuple[Any, ...]) -> None:
    _, immuno, organ, cyto, bm, temp, fer, tg, fib, ast, expected, band = row
    result = HSCORE.result(run(*case(immuno, organ, cyto, bm, temp, fer, tg, fib, ast)).instruments)
    assert result.score == expected
    assert result.score_min == result.score_max == expected  # every input known
    assert result.probability_band == band


TABLE = {
    100: 1,
    110: 3,
    120: 5,
    130: 9,
    140: 16,
    150: 25,
    160: 40,
    170: 54,
    180: 70,
    190: 80,
    200: 88,
    210: 93,
    220: 96,
    230: 98,
    240: 99,
}


@pytest.mark.parametrize(("score", "percent"), sorted(TABLE.items()))
def test_published_table_points_reproduce(score: int, percent: int) -> None:
    value, qualifier = probability(load_knowledge().criteria["hscore"], score)
    assert value == pytest.approx(percent / 100)
    assert qualifier == "="


def test_table_ends_are_open_intervals() -> None:
    doc = load_knowledge().criteria["hscore"]
    assert probability(doc, 90) == (0.01, "<")
    assert probability(doc, 250) == (0.99, ">")
    assert probability(doc, 175)[0] == pytest.approx(0.62)  # midway between 54% (170) and 70% (180)


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (110, "1-3%"),
        (115, "3-5%"),
        (125, "5-9%"),
        (134, "9-16%"),
        (177, "54-70%"),
        (212, "93-96%"),
        (245, "99->99%"),
        (250, ">99%"),
    ],
)
def test_gdl2_bands(score: int, band: str) -> None:
    assert band_label(load_knowledge().criteria["hscore"], score) == band


def _points(name: str, *resources: dict[str, Any]) -> int | None:
    return criterion(HSCORE.result(run(*resources).instruments).criteria, name).points


@pytest.mark.parametrize(
    ("value", "unit", "points"),
    [
        (38.39, "Cel", 0),
        (38.4, "Cel", 33),
        (39.4, "Cel", 33),
        (39.41, "Cel", 49),
        (101.1, "[degF]", 0),  # 38.389 C: the original's C bands at full precision (register item 3)
        (101.2, "[degF]", 33),
        (102.9, "[degF]", 33),
        (103.0, "[degF]", 49),
    ],
)
def test_temperature_bands(value: float, unit: str, points: int) -> None:
    assert _points("temperature", lab("temperature", value, unit)) == points


@pytest.mark.parametrize(
    ("value", "unit", "points"),
    [
        (1999, "ng/mL", 0),
        (2000, "ng/mL", 35),
        (6000, "ng/mL", 35),
        (6000.1, "ng/mL", 50),
        (2000, "ug/L", 35),
        (6001, "ug/L", 50),
    ],
)
def test_ferritin_bands(value: float, unit: str, points: int) -> None:
    assert _points("ferritin", lab("ferritin", value, unit)) == points


@pytest.mark.parametrize(
    ("code", "value", "unit", "points"),
    [
        ("triglycerides_mmol", 1.49, "mmol/L", 0),
        ("triglycerides_mmol", 1.5, "mmol/L", 44),
        ("triglycerides_mmol", 4.0, "mmol/L", 44),
        ("triglycerides_mmol", 4.01, "mmol/L", 64),
        ("triglycerides", 354, "mg/dL", 44),  # 3.997 mmol/L
        ("triglycerides", 132.7, "mg/dL", 0),  # 1.498 mmol/L: below 1.5 at full precision
        ("triglycerides", 133, "mg/dL", 44),
        ("triglycerides", 355, "mg/dL", 64),
    ],
)
def test_triglyceride_bands(code: str, value: float, unit: str, points: int) -> None:
    assert _points("triglycerides", lab(code, value, unit)) == points


@pytest.mark.parametrize(
    ("value", "unit", "points"),
    [
        (250, "mg/dL", 30),
        (251, "mg/dL", 0),
        (2.5, "g/L", 30),
        (2.51, "g/L", 0),
        (249, "mg/dL", 30),
    ],
)
def test_fibrinogen_band_is_inclusive(value: float, unit: str, points: int) -> None:
    assert _points("fibrinogen", lab("fibrinogen", value, unit)) == points  # register item 1: <=


@pytest.mark.parametrize(("value", "points"), [(29, 0), (29.9, 0), (30, 19), (31, 19)])
def test_ast_band_is_inclusive(value: float, points: int) -> None:
    assert _points("ast", lab("ast", value, "U/L")) == points  # register item 2: >=


@pytest.mark.parametrize(
    ("name", "value", "unit", "counts"),
    [
        ("hemoglobin", 9.2, "g/dL", True),
        ("hemoglobin", 9.3, "g/dL", False),
        ("hemoglobin", 92, "g/L", True),
        ("hemoglobin", 93, "g/L", False),
        ("platelets", 110, "10*9/L", True),
        ("platelets", 111, "10*9/L", False),
        ("platelets", 110000, "/uL", True),
        ("platelets", 110, "10*3/uL", True),
        ("wbc", 5.0, "10*9/L", True),
        ("wbc", 5.1, "10*9/L", False),
        ("wbc", 5000, "/uL", True),
    ],
)
def test_cytopenia_lineage_boundaries(name: str, value: float, unit: str, counts: bool) -> None:
    others = {
        "hemoglobin": ("wbc", 2.0, "10*9/L"),
        "wbc": ("platelets", 50, "10*9/L"),
        "platelets": ("hemoglobin", 8.0, "g/dL"),
    }
    other_name, other_value, other_unit = others[name]
    third = ({"hemoglobin", "wbc", "platelets"} - {name, other_name}).pop()
    normal = {"hemoglobin": (13.0, "g/dL"), "wbc": (7.0, "10*9/L"), "platelets": (250, "10*9/L")}[third]
    result = _points(
        "cytopenias", lab(name, value, unit), lab(other_name, other_value, other_unit), lab(third, *normal)
    )
    assert result == (24 if counts else 0)


def test_unknowns_widen_the_range_and_do_not_change_the_score() -> None:
    known = HSCORE.result(run(lab("ferritin", 7000, "ng/mL"), lab("temperature", 39.5, "Cel")).instruments)
    assert known.score == 50 + 49
    assert known.score_min == known.score
    # unknown: immuno 18, organomegaly 38, cytopenias 34, TG 64, fibrinogen 30, AST 19, BM 35
    assert known.score_max == known.score + 18 + 38 + 34 + 64 + 30 + 19 + 35
    assert known.above_cutoff is None


def test_cutoff_169_is_inclusive() -> None:
    doc = load_knowledge().criteria["hscore"]
    assert doc["cutoff"] == {
        "op": ">=",
        "value": 169,
        "source": "fardet2014",
        "note": "best cut-off 169 (sensitivity 93%, specificity 86%)",
    }
