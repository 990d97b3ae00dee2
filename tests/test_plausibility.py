"""Physiologically impossible values are excluded as data-quality issues, never read as 'not met'.

The bounds are data (`plausible` in mappings/analytes.yaml, canonical units); a censored result is judged by
the true values its comparator allows. Every case is checked on both paths: a typed hook request (the fast
path) and plain JSON (the lenient path).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine import EvaluationResult, evaluate
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.observations.plausibility import Plausible
from cds_service.engine.units import Linear, UnitError
from cds_service.errors import DataFileError
from cds_service.hooks import typed_request
from tests.cds_helpers import dev_config, evidence_of, full_prefetch, hook_body
from tests.engine_helpers import AT, lab
from tests.fhir_builders import car_t, patient

KB = load_knowledge()
POSITIVE = Plausible.of({"min": 0, "min_exclusive": True})
NON_NEGATIVE = Plausible.of({"min": 0})
TEMPERATURE = Plausible.of({"min": 25, "max": 46})


def request(*observations: dict[str, Any]) -> bytes:
    prefetch = full_prefetch([patient(), car_t(), *observations])
    return json.dumps(hook_body("patient-view", "p1", prefetch=prefetch)).encode()


def both_paths(*observations: dict[str, Any]) -> list[EvaluationResult]:
    """The same Observations evaluated from a typed hook request and from plain JSON."""
    body = request(*observations)
    typed = typed_request.decode(body)
    assert typed is not None  # the request takes the fast path
    return [
        evaluate(typed["prefetch"], at=AT, knowledge=KB),
        evaluate(orjson.loads(body)["prefetch"], at=AT, knowledge=KB),
    ]


def implausible(result: EvaluationResult) -> list[tuple[str, str, str | None]]:
    return [(i.resource, i.problem, i.path) for i in result.data_quality.issues if "implausible" in i.problem]


# ---------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("plausible", "value", "comparator", "allowed"),
    [
        (POSITIVE, 0.0001, None, True),
        (POSITIVE, 0, None, False),
        (POSITIVE, -5, None, False),
        (POSITIVE, 0.5, "<", True),  # some true value below 0.5 is positive
        (POSITIVE, 0, "<", False),
        (POSITIVE, 0, "<=", False),
        (POSITIVE, 0, ">", True),
        (NON_NEGATIVE, 0, None, True),
        (NON_NEGATIVE, -0.0001, None, False),
        (NON_NEGATIVE, 0, "<=", True),
        (NON_NEGATIVE, 0, "<", False),
        (TEMPERATURE, 46, None, True),
        (TEMPERATURE, 46.01, None, False),
        (TEMPERATURE, 25, None, True),
        (TEMPERATURE, 24.99, None, False),
        (TEMPERATURE, 46, ">=", True),
        (TEMPERATURE, 46, ">", False),
        (TEMPERATURE, 50, "<", True),
        (TEMPERATURE, 25, "<", False),
        (Plausible.of(None), -1e15, None, True),
    ],
)
def test_a_result_is_plausible_when_a_true_value_it_stands_for_can_be(
    plausible: Plausible, value: float, comparator: str | None, allowed: bool
) -> None:
    assert plausible.allows(value, comparator) is allowed


def conversions() -> list[tuple[str, Linear]]:
    """(analyte, conversion) for each unit an analyte accepts among its own and the usual ones."""
    usual = [
        "[degF]",
        "K",
        "mmol/L",
        "umol/L",
        "g/L",
        "mg/L",
        "g/dL",
        "ug/L",
        "1",
        "/uL",
        "10*3/uL",
        "ukat/L",
    ]
    found = []
    for analyte, spec in KB.analytes.items():
        for unit in {spec["canonical_unit"], *spec.get("unit_aliases", {}), *usual}:
            try:
                found.append((analyte, KB.units.conversion(analyte, unit)))
            except UnitError:
                continue
    return found


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(conversions()), st.data())
def test_a_reported_value_inside_the_sure_range_is_plausible_whatever_its_comparator(
    pair: tuple[str, Linear], data: st.DataObject
) -> None:
    """The fast path's single check (Plausible.sure_range, in the reported unit) never lets through a
    value the exact rule would exclude, at any conversion."""
    analyte, conversion = pair
    plausible = Plausible.of(KB.analytes[analyte]["plausible"])
    low, high = plausible.sure_range(conversion)
    assert low < high
    raw = data.draw(st.floats(low, high, exclude_min=True, exclude_max=True))
    for comparator in (None, "<", "<=", ">", ">="):
        assert plausible.allows(conversion.apply(raw), comparator)


# ---------------------------------------------------------------------------------- both paths


@pytest.mark.parametrize(
    ("analyte", "value", "unit", "comparator", "kept"),
    [
        ("ferritin", 0, "ng/mL", None, False),
        ("ferritin", 0.0001, "ng/mL", None, True),
        ("ferritin", -5, "ng/mL", None, False),
        ("ferritin", 0, "ng/mL", "<", False),
        ("ferritin", 0, "ng/mL", "<=", False),
        ("ferritin", 0.5, "ng/mL", "<", True),
        ("fibrinogen", 0, "mg/dL", None, False),
        ("fibrinogen", 0.01, "g/L", None, True),
        ("anc", 0, "10*9/L", None, True),
        ("anc", -0.1, "10*9/L", None, False),
        ("temperature", 46, "Cel", None, True),
        ("temperature", 46.01, "Cel", None, False),
        ("temperature", 25, "Cel", None, True),
        ("temperature", 24.99, "Cel", None, False),
        ("temperature", 114.8, "[degF]", None, True),  # 46.0 Cel: judged after conversion
        ("temperature", 115, "[degF]", None, False),  # 46.11 Cel
        ("temperature", 46, "Cel", ">=", True),
        ("temperature", 46, "Cel", ">", False),
        ("spo2", 100, "%", None, True),
        ("spo2", 100.1, "%", None, False),
        ("spo2", 0, "%", None, False),
        ("o2_flow", 0, "L/min", None, True),
    ],
)
def test_values_at_and_beyond_the_plausible_bounds_on_both_paths(
    analyte: str, value: float, unit: str, comparator: str | None, kept: bool
) -> None:
    observation = lab(analyte, value, unit, comparator=comparator)
    for result in both_paths(observation):
        assert (analyte in result.labs) is kept
        issues = implausible(result)
        assert len(issues) == (0 if kept else 1)
        if not kept:
            assert issues[0][0] == f"Observation/{observation['id']}"
            assert issues[0][2] == "valueQuantity.value"


def test_the_issue_says_what_was_excluded_and_why() -> None:
    fahrenheit = lab("temperature", 120, "[degF]", rid="hot")
    negative = lab("ferritin", -5, "ng/mL", rid="neg")
    for result in both_paths(fahrenheit, negative):
        assert implausible(result) == [
            (
                "Observation/hot",
                "implausible value 120 [degF] = 48.8889 Cel "
                "(Body temperature; plausible >= 25 and <= 46 Cel): excluded",
                "valueQuantity.value",
            ),
            (
                "Observation/neg",
                "implausible value -5 ng/mL (Ferritin; plausible > 0 ng/mL): excluded",
                "valueQuantity.value",
            ),
        ]


def test_an_implausible_panel_component_is_excluded_and_the_others_kept() -> None:
    panel = lab("ferritin", 1, "ng/mL", rid="bp")
    del panel["valueQuantity"]
    panel["code"] = {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
    panel["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        }
        for code, value in (("8480-6", -10), ("8462-4", 45))
    ]
    for result in both_paths(panel):
        assert "bp_systolic" not in result.labs
        assert [v.value for v in result.labs["bp_diastolic"]] == [45]
        [(resource, _, path)] = implausible(result)
        assert (resource, path) == ("Observation/bp#component[0]", "component[0].valueQuantity.value")


# ---------------------------------------------------------------------------------- end to end


def ferritin_criteria(result: EvaluationResult) -> dict[str, str]:
    instruments = result.instruments
    return {
        name: next(c.status for c in instruments[name].criteria if c.id == "ferritin")
        for name in ("hscore", "hlh2004", "cartox", "shah", "iec_hs")
    }


def test_a_negative_ferritin_leaves_the_ferritin_criteria_unknown_not_unmet() -> None:
    for result in both_paths(lab("ferritin", -5, "ng/mL")):
        assert set(ferritin_criteria(result).values()) == {"unknown"}
        assert IEC_HS.result(result.instruments).status == "indeterminate"
        assert implausible(result)
    # The control: a plausible low ferritin does decide them.
    for result in both_paths(lab("ferritin", 100, "ng/mL")):
        assert ferritin_criteria(result)["hlh2004"] == "not-met"
        assert IEC_HS.result(result.instruments).status == "not-met"


def test_the_excluded_value_is_shown_to_a_person(tmp_path: Path) -> None:
    """Through the hook (at the builders' day +13, inside the card's risk window): the card names what the
    exclusion leaves undecided, and the data-quality list of the evidence behind it (the same evaluation;
    issue 17 moved data quality off the card) names the excluded value."""
    app = create_app(dev_config(tmp_path, CLOCK=lambda: AT))
    body = json.loads(request(lab("ferritin", -5, "ng/mL", rid="neg")))
    response = app.test_client().post("/cds-services/iec-hs-screening", json=body)
    assert response.status_code == 200
    card = response.get_json()["cards"][0]
    assert card["summary"].startswith("IEC-HS not judged (no ferritin in")  # the only ferritin is excluded
    quality = evidence_of(app.test_client(), "iec-hs-screening", body).split("Data quality")[1]
    assert "Observation/neg implausible value -5 ng/mL (Ferritin" in quality  # resource, problem


# ---------------------------------------------------------------------------------- the data


# Criteria whose name is not their analyte's (the rest sit under the analyte's name).
ALIASES = {
    "fever": "temperature",
    "hypofibrinogenemia": "fibrinogen",
    "hypertriglyceridemia": "triglycerides",
    "hypoxia_spo2": "spo2",
    "infant_hemoglobin": "hemoglobin",
    "adult_systolic": "bp_systolic",
    "adult_mean": "map",
    "pediatric_systolic_base": "bp_systolic",
}


def thresholds(data: Any, trail: tuple[str, ...] = ()) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(analyte, threshold) of every threshold with a unit in a criteria file: the analyte is the nearest
    enclosing key that names one."""
    if isinstance(data, dict):
        if "op" in data and "unit" in data:
            names = (ALIASES.get(key, key) for key in reversed(trail))
            yield next((name for name in names if name in KB.analytes), None), data
        for key, value in data.items():
            yield from thresholds(value, (*trail, str(key)))
    elif isinstance(data, list):
        for value in data:
            yield from thresholds(value, trail)


COMPLEMENT = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def test_every_threshold_can_be_met_and_missed_by_a_plausible_value() -> None:
    found = [pair for doc in (*KB.criteria.values(), KB.ctcae) for pair in thresholds(doc)]
    assert len(found) > 40
    for analyte, spec in found:
        assert analyte is not None, spec
        plausible = Plausible.of(KB.analytes[analyte]["plausible"])
        cut = KB.threshold(analyte, spec).value
        assert plausible.allows(cut, spec["op"]), (analyte, spec)
        assert plausible.allows(cut, COMPLEMENT[spec["op"]]), (analyte, spec)


def test_fallback_reference_limits_are_plausible() -> None:
    for analyte, limits in KB.ranges.items():
        plausible = Plausible.of(KB.analytes[analyte]["plausible"])
        assert all(plausible.allows(limit, None) for limit in limits if limit is not None), analyte


def test_every_analyte_has_bounds_that_leave_room() -> None:
    for analyte, spec in KB.analytes.items():
        plausible = Plausible.of(spec["plausible"])
        assert plausible.low < plausible.high, analyte


@pytest.mark.parametrize(
    "change",
    [
        lambda spec: spec.pop("plausible"),
        lambda spec: spec.update(plausible={}),
        lambda spec: spec.update(plausible={"min_exclusive": True}),  # exclusive of no bound
        lambda spec: spec.update(plausible={"min": "0"}),
    ],
    ids=["missing", "empty", "exclusive-without-bound", "text"],
)
def test_malformed_bounds_fail_at_start_naming_the_file(tmp_path: Path, change: Any) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", mappings)
    path = mappings / "analytes.yaml"
    data = yaml.safe_load(path.read_text())
    change(data["analytes"]["ferritin"])
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DataFileError) as caught:
        load_knowledge(mappings)
    assert "analytes.yaml" in str(caught.value)
