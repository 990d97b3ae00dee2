"""HLH-2004 (Henter 2007) and HLH-94: boundaries, counting and the fulfilled true/false/null rule."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.engine.instruments.registry import HLH94, HLH2004
from tests.engine_helpers import KB, criterion, finding, lab, run, text_finding
from tests.fhir_builders import day, obs, patient

SPLENOMEGALY = "16294009"


def status(cid: str, *resources: dict[str, Any], **kw: Any) -> str:
    return criterion(HLH2004.result(run(*resources, **kw).instruments).criteria, cid).status


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (38.5, "Cel", "met"),
        (38.49, "Cel", "not-met"),
        (101.3, "[degF]", "met"),
        (101.2, "[degF]", "not-met"),
    ],
)
def test_fever(value: float, unit: str, expected: str) -> None:
    assert status("fever", lab("temperature", value, unit)) == expected


def test_fever_threshold_is_configurable() -> None:
    assert status("fever", lab("temperature", 38.3, "Cel"), hlh2004_fever_celsius=38.2) == "met"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (500, "ug/L", "met"),
        (499, "ug/L", "not-met"),
        (500, "ng/mL", "met"),
        (499.9, "ng/mL", "not-met"),
    ],
)
def test_ferritin_is_inclusive(value: float, unit: str, expected: str) -> None:
    assert status("ferritin", lab("ferritin", value, unit)) == expected  # register item 8


@pytest.mark.parametrize(
    ("code", "value", "unit", "expected"),
    [
        ("triglycerides", 265, "mg/dL", "met"),
        ("triglycerides", 264, "mg/dL", "not-met"),
        ("triglycerides_mmol", 3.0, "mmol/L", "met"),
        ("triglycerides_mmol", 2.99, "mmol/L", "not-met"),
    ],
)
def test_triglycerides_inclusive(code: str, value: float, unit: str, expected: str) -> None:
    normal_fibrinogen = lab("fibrinogen", 300, "mg/dL")
    assert status("triglycerides_or_fibrinogen", lab(code, value, unit), normal_fibrinogen) == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (150, "mg/dL", "met"),
        (151, "mg/dL", "not-met"),
        (1.5, "g/L", "met"),
        (1.51, "g/L", "not-met"),
    ],
)
def test_fibrinogen_inclusive(value: float, unit: str, expected: str) -> None:
    normal_tg = lab("triglycerides", 100, "mg/dL")
    assert status("triglycerides_or_fibrinogen", lab("fibrinogen", value, unit), normal_tg) == expected


def test_tg_or_fibrinogen_unknown_when_one_is_missing_and_the_other_normal() -> None:
    assert status("triglycerides_or_fibrinogen", lab("fibrinogen", 300, "mg/dL")) == "unknown"


def test_non_fasting_triglycerides_are_flagged() -> None:
    result = run(lab("triglycerides", 300, "mg/dL"))
    c = criterion(HLH2004.result(result.instruments).criteria, "triglycerides_or_fibrinogen")
    assert any("not coded as fasting" in e.description for e in c.evidence)
    fasting = run(obs("3048-6", 300, "mg/dL", day(12)))
    c2 = criterion(HLH2004.result(fasting.instruments).criteria, "triglycerides_or_fibrinogen")
    assert c2.status == "met"
    assert not any("not coded as fasting" in e.description for e in c2.evidence)


@pytest.mark.parametrize(
    ("hb", "plt", "anc", "expected"),
    [
        ((89, "g/L"), (99, "10*9/L"), (1.5, "10*9/L"), "met"),
        ((90, "g/L"), (100, "10*9/L"), (0.99, "10*9/L"), "not-met"),  # Hb < 90 and platelets < 100 are strict
        ((8.9, "g/dL"), (250, "10*9/L"), (0.99, "10*9/L"), "met"),
        ((8.9, "g/dL"), (250, "10*9/L"), (1.0, "10*9/L"), "not-met"),
        ((8.9, "g/dL"), (99000, "/uL"), (500, "/uL"), "met"),
    ],
)
def test_cytopenias_two_of_three(
    hb: tuple[float, str], plt: tuple[float, str], anc: tuple[float, str], expected: str
) -> None:
    assert status("cytopenias", lab("hemoglobin", *hb), lab("platelets", *plt), lab("anc", *anc)) == expected


def test_cytopenias_use_anc_not_wbc() -> None:
    # WBC is very low but ANC is unknown: only Hb counts -> cannot reach 2 of 3 without ANC -> unknown.
    result = status(
        "cytopenias",
        lab("hemoglobin", 8.0, "g/dL"),
        lab("platelets", 250, "10*9/L"),
        lab("wbc", 0.5, "10*9/L"),
    )
    assert result == "unknown"


def test_infant_hemoglobin_rule() -> None:
    infant = patient(birth="2026-02-20")  # 21 days old at day 13
    resources = [lab("hemoglobin", 95, "g/L"), lab("platelets", 50, "10*9/L"), lab("anc", 2.0, "10*9/L")]
    from cds_service.engine import evaluate
    from tests.fhir_builders import bundle, car_t

    result = evaluate(bundle(infant, car_t(), *resources), at=day(13), knowledge=KB)
    assert criterion(HLH2004.result(result.instruments).criteria, "cytopenias").status == "met"
    adult = run(*resources)
    assert criterion(HLH2004.result(adult.instruments).criteria, "cytopenias").status == "not-met"


def test_scd25_matched_by_text_and_threshold_inclusive() -> None:
    def scd25(value: float, unit: str = "U/mL") -> dict[str, Any]:
        resource = lab("ferritin", value, unit)
        resource["code"] = {"text": "Soluble IL-2 receptor (sCD25)"}
        return resource

    assert status("scd25", scd25(2400)) == "met"
    assert status("scd25", scd25(2399)) == "not-met"
    result = run(scd25(5000, "pg/mL"))  # no verified pg/mL -> U/mL factor: excluded and reported
    assert criterion(HLH2004.result(result.instruments).criteria, "scd25").status == "unknown"
    assert any("U/mL" in issue.problem for issue in result.data_quality.issues)


def _full(met: int, unknown: int) -> list[dict[str, Any]]:
    """A patient with `met` criteria met, `unknown` unknown and the rest known not met (of the 8)."""
    marrow, spleen_ln = "Hemophagocytosis in bone marrow", "Hemophagocytosis in spleen"
    builders: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = [
        ([lab("temperature", 39.0, "Cel")], [lab("temperature", 37.0, "Cel")]),
        ([finding(SPLENOMEGALY, True)], [finding(SPLENOMEGALY, False)]),
        ([lab("ferritin", 800, "ng/mL")], [lab("ferritin", 100, "ng/mL")]),
        # "not met" needs every site refuted: marrow alone says nothing about spleen or lymph nodes
        ([text_finding(marrow, True)], [text_finding(marrow, False), text_finding(spleen_ln, False)]),
        ([text_finding("Low NK cell activity", True)], [text_finding("Low NK cell activity", False)]),
    ]
    resources: list[dict[str, Any]] = []
    for index, (yes, no) in enumerate(builders):
        if index < met:
            resources += yes
        elif index >= met + unknown:
            resources += no
    # the remaining three (cytopenias, TG/fibrinogen, sCD25) are always unknown: no data
    return resources


@pytest.mark.parametrize(
    ("met", "unknown_extra", "fulfilled"),
    [
        (5, 0, True),  # 5 met
        (4, 1, None),  # 4 met, 1 + 3 unknown: undecided
        (2, 0, True and None),  # 2 met + 3 unknown = 5 possible: undecided
        (1, 0, False),  # 1 met + 3 unknown = 4 < 5: not fulfilled
    ],
)
def test_fulfilled_rule(met: int, unknown_extra: int, fulfilled: bool | None) -> None:
    result = HLH2004.result(run(*_full(met, unknown_extra)).instruments)
    assert result.met_count == met
    assert result.unknown_count == 3 + unknown_extra
    assert result.fulfilled is fulfilled


def test_hlh94_requires_all_five_and_is_flagged_unverified() -> None:
    result = HLH94.result(run(lab("temperature", 39.0, "Cel"), finding(SPLENOMEGALY, False)).instruments)
    assert result.unverified
    assert result.fulfilled is False  # splenomegaly refuted: all-five rule cannot be met
    undecided = HLH94.result(run(lab("temperature", 39.0, "Cel")).instruments)
    assert undecided.fulfilled is None
