"""Clinical content of the cards (cards/treatments.yaml, cards/templates.yaml) against the seed review.

Expected strings are copied from the seed (Fugere 2023, section 5) and the clinical reference (5.4, Hines
Table 4), not from the renderer's output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.cards import load_card_content
from cds_service.cards.content import build_content
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine.knowledge import load_knowledge
from cds_service.errors import DataFileError
from tests.engine_helpers import KB

SEED = PROJECT_ROOT.parent / "shared" / "seed" / "fugere-2023-iec-hs-review.txt"

# Seed section 5, verbatim.
DOSES = [
    "100–200 mg IV or SQ every 6–12 h",  # anakinra, adults (5.3)
    "up to 10 mg/kg IV daily, or 4 mg/kg IV every 6 h",  # anakinra, pediatric (5.3)
    "10 mg IV every 6 h with escalation to 20 mg IV every 6 h",  # dexamethasone (5.2)
    "methylprednisolone 1–2 mg/kg or dexamethasone 5–10 mg/m² every 6–24 h",  # pulse (5.2)
    "up to 10–20 mg daily",  # ruxolitinib, >= 14 y (5.4)
    "weight-based dosing of 2.5–5 mg daily",  # ruxolitinib, < 14 y (5.4): the seed's "weight-based" kept
    "twice-weekly IV infusion of 1 mg/kg",  # emapalumab (5.6)
    "150 mg/m² twice weekly",  # etoposide (5.7)
]
CONDITIONS = [
    "refractory grade 4 CRS or end organ toxicities",  # pulse corticosteroids (5.2)
    "without high-grade end organ damage, concomitant neurotoxicity or refractory grade 4 hypotension",
    "refractory to anti-cytokine treatments and corticosteroids",  # emapalumab (5.6)
]


def _seed() -> str:
    assert SEED.exists(), f"the seed review must sit beside the repository (CI checks out shared/): {SEED}"
    return " ".join(SEED.read_text(encoding="utf-8").split())


def test_the_oracle_strings_are_verbatim_in_the_seed() -> None:
    seed = _seed()
    for phrase in DOSES + CONDITIONS:
        assert phrase in seed


def test_every_dose_text_and_note_in_the_content_is_verbatim_from_the_seed() -> None:
    seed = _seed()
    for option in load_card_content(KB).options:
        for dose in option.dosing:
            assert dose.text in seed, f"{option.id}: dose text is not the seed's"
            for note in dose.notes:
                assert note in seed, f"{option.id}: note is not the seed's"


def test_conditions_keep_the_seeds_words() -> None:
    conditions = " ".join(o.condition or "" for o in load_card_content(KB).options)
    for phrase in CONDITIONS:
        assert phrase in conditions


def test_adult_only_text_is_attached_to_the_adult_dose() -> None:
    anakinra = load_card_content(KB).option("anakinra")
    by_population = {d.population: d.notes for d in anakinra.dosing}
    assert any("in adults" in n for n in by_population["adult"]) and not by_population["pediatric"]


def test_docs_record_every_dose_text() -> None:
    docs = (PROJECT_ROOT / "docs" / "clinical-content.md").read_text(encoding="utf-8")
    for option in load_card_content(KB).options:
        for dose in option.dosing:
            assert dose.text in docs, option.id


# --- the loader ---


@pytest.fixture
def cards_copy(tmp_path: Path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(PROJECT_ROOT / "cards", target)
    return target


def _edit(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def _option(data: dict[str, Any], option_id: str) -> dict[str, Any]:
    return next(o for o in data["options"] if o["id"] == option_id)


@pytest.mark.parametrize(
    ("file", "change", "field"),
    [
        ("treatments.yaml", lambda d: _option(d, "anakinra").update(citations=["nobody2099"]), "citations"),
        (
            "treatments.yaml",
            lambda d: _option(d, "anakinra")["dosing"][1]["per_kg"][1].update(mg=[5]),
            "per_kg",
        ),
        (
            "treatments.yaml",
            lambda d: _option(d, "anakinra")["dosing"][0]["order"]["dose"].update(high=300),
            "order.dose",
        ),
        (
            "treatments.yaml",
            lambda d: _option(d, "anakinra")["dosing"][0]["order"]["timing"].update(says="every 8 h"),
            "timing.says",
        ),
        (
            "treatments.yaml",
            lambda d: _option(d, "anakinra")["dosing"][0]["order"]["route"].update(code="IM"),
            "route.code",
        ),
        ("treatments.yaml", lambda d: _option(d, "etoposide").update(rxnorm="72435"), "rxnorm"),
        ("treatments.yaml", lambda d: _option(d, "anakinra").update(drug_class="aspirin"), "drug_class"),
        (
            "templates.yaml",
            lambda d: d["cards"]["patient_view"]["summary"].update(met="{nonsense}"),
            "summary.met",
        ),
        ("templates.yaml", lambda d: d["statements"].pop("possible"), "statements"),
        (
            "templates.yaml",
            lambda d: d["orderable_labs"].update(spo3={"decides": "status"}),
            "orderable_labs",
        ),
        ("templates.yaml", lambda d: d["speak"].update(risk_window_days=0), "speak.risk_window_days"),
        ("templates.yaml", lambda d: d["repeat_alerts"].update(hours=-1), "repeat_alerts.hours"),
        ("templates.yaml", lambda d: d["citation_short"].update(nobody2099="x"), "citation_short"),
        ("templates.yaml", lambda d: d["prefetch_gaps"].pop("conditions"), "prefetch_gaps"),
        ("templates.yaml", lambda d: d["unread_analytes"].append("ferritine"), "unread_analytes"),
        ("templates.yaml", lambda d: d["labels"].update(unread_one="{analyte} {value}"), "labels.unread_one"),
        ("templates.yaml", lambda d: d["gap_words"].pop("crs-active"), "gap_words"),
        (
            "templates.yaml",
            lambda d: d["gap_words"].update({"no CRS": {"summary": "x", "detail": "y"}}),
            "gap_words",
        ),
        (
            "templates.yaml",
            lambda d: d["gap_words"]["no-ferritin"].update(summary="no ferritin in {weeks} weeks"),
            "gap_words.no-ferritin.summary",
        ),
    ],
)
def test_malformed_content_fails_fast_naming_file_and_field(
    cards_copy: Path, file: str, change: Any, field: str
) -> None:
    _edit(cards_copy / file, change)
    with pytest.raises(DataFileError) as info:
        build_content(cards_copy, load_knowledge())
    assert info.value.path.endswith(file)
    assert field in info.value.field


def test_the_shipped_content_loads_with_its_project_definitions() -> None:
    content = load_card_content(KB)
    assert {o.line for o in content.options} == {"supportive", "first", "second", "salvage", "caution"}
    assert all(o.citations for o in content.options)
    assert (
        content.risk_window_days == 100 and content.repeat_hours == 24 and content.next_line_after_hours == 48
    )
    assert {c.status for c in content.rxnorm.values()} <= {"V", "S", "R", "D"}


def test_card_gap_words_key_on_exactly_the_engines_gap_codes() -> None:
    """The cards key on the engine's stable gap codes, never on its text: every code the engine can name
    (its words in criteria/iec_hs.yaml, its enum in the published evaluation schema) has card words."""
    content = load_card_content(KB)
    fragment = PROJECT_ROOT / "cds_service" / "schemas" / "instruments" / "iecHs.schema.json"
    schema = json.loads(fragment.read_text(encoding="utf-8"))
    published = set(schema["properties"]["gaps"]["items"]["properties"]["code"]["enum"])
    assert set(content.gap_words) == set(KB.criteria["iec_hs"]["gaps"]) == published
    for code, words in content.gap_words.items():
        assert words.summary and words.detail, code


def test_every_prefetch_key_of_the_services_has_words_for_its_gap() -> None:
    """A key that could not be read (or only in part) is named on the card in words, never as a bare key."""
    from cds_service.cards.vocab import PREFETCH_KEYS
    from cds_service.hooks.services import prefetch_templates

    keys = {template.key for template in prefetch_templates(KB)}
    assert keys == PREFETCH_KEYS == set(load_card_content(KB).prefetch_gaps)
