"""Every mappings/ file loads and validates; malformed files fail naming the file and field; catalog names
resolve in both directions."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine.catalog import Analyte, DrugClass, Finding, ProcedureKind
from cds_service.engine.knowledge import load_knowledge
from cds_service.errors import DataFileError

MAPPINGS = PROJECT_ROOT / "mappings"


@pytest.fixture
def mappings_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def edit(path: Path, change: Callable[[Any], Any]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_all_mappings_load() -> None:
    kb = load_knowledge(MAPPINGS)
    assert set(kb.analytes) == {a.value for a in Analyte}
    assert set(kb.drug_roles) == {d.value for d in DrugClass}
    assert set(kb.finding_display) == {f.value for f in Finding}
    assert set(kb.procedure_text) == {p.value for p in ProcedureKind}


def test_every_reference_loinc_code_is_mapped() -> None:
    """All LOINC variants of the reference's section 7.1/7.2 tables that have a code."""
    kb = load_knowledge(MAPPINGS)
    expected = {
        "2276-4": "ferritin",
        "20567-4": "ferritin",
        "24373-3": "ferritin",
        "14723-1": "ferritin",
        "3255-7": "fibrinogen",
        "48664-7": "fibrinogen",
        "30902-1": "fibrinogen",
        "3256-5": "fibrinogen",
        "2571-8": "triglycerides",
        "14927-8": "triglycerides",
        "3048-6": "triglycerides",
        "47210-0": "triglycerides",
        "1920-8": "ast",
        "30239-8": "ast",
        "88112-8": "ast",
        "1742-6": "alt",
        "1743-4": "alt",
        "1975-2": "bilirubin_total",
        "14631-6": "bilirubin_total",
        "1968-7": "bilirubin_direct",
        "14629-0": "bilirubin_direct",
        "718-7": "hemoglobin",
        "20509-6": "hemoglobin",
        "59260-0": "hemoglobin",
        "777-3": "platelets",
        "26515-7": "platelets",
        "778-1": "platelets",
        "6690-2": "wbc",
        "26464-8": "wbc",
        "804-5": "wbc",
        "751-8": "anc",
        "753-4": "anc",
        "26499-4": "anc",
        "2532-0": "ldh",
        "14804-9": "ldh",
        "14805-6": "ldh",
        "5902-2": "pt",
        "6301-6": "inr",
        "34714-6": "inr",
        "46418-0": "inr",
        "14979-9": "aptt",
        "3173-2": "aptt",
        "48065-7": "d_dimer_feu",
        "48066-5": "d_dimer_ddu",
        "48067-3": "d_dimer_other",
        "7799-0": "d_dimer_other",
        "3246-6": "d_dimer_other",
        "48058-2": "d_dimer_other",
        "71427-9": "d_dimer_other",
        "2160-0": "creatinine",
        "14682-9": "creatinine",
        "1988-5": "crp",
        "30522-7": "crp",
        "76485-2": "crp",
        "26881-3": "il6",
        "27415-9": "ifn_gamma",
        "8310-5": "temperature",
        "2708-6": "spo2",
        "59408-5": "spo2",
        "3151-8": "o2_flow",
        "3150-0": "fio2",
        "19994-3": "fio2",
        "8480-6": "bp_systolic",
        "8462-4": "bp_diastolic",
        "8478-0": "map",
    }
    assert {code: kb.loinc_index[code].analyte for code in expected} == expected
    assert kb.loinc_index["1743-4"].status == "R"  # UNVERIFIED in the reference, flagged in data


def test_every_citation_used_by_criteria_exists_and_unverified_items_are_flagged() -> None:
    kb = load_knowledge(MAPPINGS)
    assert kb.criteria["iec_hs"]["grading"]["unverified"] is True
    assert kb.criteria["hlh94"]["unverified"] is True
    assert kb.criteria["shah"]["unverified"] is True
    assert kb.citations["hines2023_grading"]["status"] == "R"


def test_malformed_yaml_names_the_file(mappings_copy: Path) -> None:
    (mappings_copy / "analytes.yaml").write_text("analytes: [unclosed")
    with pytest.raises(DataFileError) as info:
        load_knowledge(mappings_copy)
    assert "analytes.yaml" in str(info.value)


def test_schema_violation_names_file_and_field(mappings_copy: Path) -> None:
    edit(mappings_copy / "analytes.yaml", lambda d: d["analytes"]["ferritin"].update(worst="sideways"))
    with pytest.raises(DataFileError) as info:
        load_knowledge(mappings_copy)
    assert info.value.path.endswith("analytes.yaml")
    assert info.value.field == "$.analytes.ferritin.worst"


def test_bad_threshold_operator_is_named(mappings_copy: Path) -> None:
    edit(
        mappings_copy / "criteria" / "hlh2004.yaml",
        lambda d: d["criteria"]["ferritin"]["threshold"].update(op="=>"),
    )
    with pytest.raises(DataFileError) as info:
        load_knowledge(mappings_copy)
    assert info.value.field == "$.criteria.ferritin.threshold.op"


def test_unknown_catalog_name_and_missing_catalog_name(mappings_copy: Path) -> None:
    edit(
        mappings_copy / "medications.yaml",
        lambda d: d["classes"].update(
            aspirin={"display": "Aspirin", "role": "vasopressor", "names": ["aspirin"], "rxnorm": []}
        ),
    )
    with pytest.raises(DataFileError, match="aspirin"):
        load_knowledge(mappings_copy)
    shutil.copy(MAPPINGS / "medications.yaml", mappings_copy / "medications.yaml")
    edit(mappings_copy / "conditions.yaml", lambda d: d["findings"].pop("bleeding"))
    with pytest.raises(DataFileError, match="bleeding"):
        load_knowledge(mappings_copy)


def test_unknown_citation_is_rejected(mappings_copy: Path) -> None:
    edit(mappings_copy / "criteria" / "shah.yaml", lambda d: d.update(citation="nobody2099"))
    with pytest.raises(DataFileError, match="nobody2099"):
        load_knowledge(mappings_copy)


def test_a_criteria_file_missing_a_section_fails_at_load(mappings_copy: Path) -> None:
    edit(mappings_copy / "criteria" / "hscore.yaml", lambda d: d.pop("probability_table"))
    with pytest.raises(DataFileError) as info:
        load_knowledge(mappings_copy)
    assert info.value.path.endswith("hscore.yaml")
    assert "probability_table" in info.value.problem


@pytest.mark.parametrize(
    ("file", "change", "field"),
    [
        ("astct_crs.yaml", lambda d: d["course"].pop("vasopressor_point_hours"), "vasopressor_point_hours"),
        ("astct_crs.yaml", lambda d: d["course"].update(merge_gap_hours=-1), "merge_gap_hours"),
        (
            "iec_hs.yaml",
            lambda d: d["most_common"]["cytopenias"].pop("recovery_lookback_days"),
            "recovery_lookback_days",
        ),
    ],
)
def test_a_project_definition_of_the_crs_or_cytopenia_rules_is_checked_at_load(
    mappings_copy: Path, file: str, change: Any, field: str
) -> None:
    edit(mappings_copy / "criteria" / file, change)
    with pytest.raises(DataFileError) as info:
        load_knowledge(mappings_copy)
    assert info.value.path.endswith(file)
    assert field in f"{info.value.field} {info.value.problem}"
