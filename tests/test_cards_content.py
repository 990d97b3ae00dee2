"""Clinical content of the cards against the review and the reference, and the cards/ data loader.

The dose strings below are copied from the review (Fugere 2023, section 5; seed file
../shared/seed/fugere-2023-iec-hs-review.txt) and the supportive-care targets from the reference (5.4, Hines
Table 4). They are the oracle: the cards must reproduce them, never the other way round.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.cards import load_card_content
from cds_service.cards.content import build_content
from cds_service.cards.rules import assess
from cds_service.cards.vocab import WHEN_RULES
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine.knowledge import load_knowledge
from cds_service.errors import DataFileError
from tests.engine_helpers import KB
from tests.fhir_builders import day, medication, obs
from tests.test_cards import anakinra_at, classic, created, one_card, plain, result_of

SEED = PROJECT_ROOT.parent / "shared" / "seed" / "fugere-2023-iec-hs-review.txt"

# Review section 5, verbatim.
ADULT_DOSES = [
    "100–200 mg IV or SQ every 6–12 h",  # anakinra, adults (5.3)
    "10 mg IV every 6 h with escalation to 20 mg IV every 6 h",  # dexamethasone (5.2)
    "methylprednisolone 1–2 mg/kg or dexamethasone 5–10 mg/m² every 6–24 h",  # pulse (5.2)
    "up to 10–20 mg daily",  # ruxolitinib, >= 14 y (5.4)
    "twice-weekly IV infusion of 1 mg/kg",  # emapalumab (5.6)
    "150 mg/m² twice weekly",  # etoposide (5.7)
    "50–100 mg/m²",  # etoposide modification (5.7)
]
PEDIATRIC_DOSES = [
    "up to 10 mg/kg IV daily, or 4 mg/kg IV every 6 h",  # anakinra, pediatric (5.3)
    "2.5–5 mg daily",  # ruxolitinib, < 14 y (5.4)
]
# Reference 5.4, Hines Table 4 (verified) and discrepancy register item 15.
SUPPORTIVE = [
    "fibrinogen > 100 mg/dL without bleeding and > 150 mg/dL with bleeding",
    "hemoglobin ≥ 7 g/dL",
    "platelets ≥ 50 x 10⁹/L if there is active bleeding or coagulopathy",
    "INR > 1.5: consider vitamin K",
    "INR > 2: consider FFP",
    "Complete blood count with differential, PT/PTT and fibrinogen daily",
    "sCD25, NK-cell function, triglycerides, IFN-γ, CXCL9, CXCL10, IL-10 and IL-18",
    "VTE prophylaxis with caution",
]
EMAPALUMAB_INDEX = [
    o["id"]
    for o in yaml.safe_load((PROJECT_ROOT / "cards" / "treatments.yaml").read_text(encoding="utf-8"))[
        "options"
    ]
].index("emapalumab")
REFRACTORY_HIGH_GRADE = (anakinra_at(10, 12), medication(None, "norepinephrine", day(12, 8)))


def test_the_oracle_strings_are_verbatim_in_the_review() -> None:
    assert SEED.exists(), f"the seed review must sit beside the repository (CI checks out shared/): {SEED}"
    review = SEED.read_text(encoding="utf-8")
    for phrase in ADULT_DOSES + PEDIATRIC_DOSES:
        assert phrase in review


def test_every_dose_text_in_the_content_is_verbatim_from_the_review() -> None:
    assert SEED.exists(), f"the seed review must sit beside the repository (CI checks out shared/): {SEED}"
    review = " ".join(SEED.read_text(encoding="utf-8").split())
    for option in load_card_content(KB).options:
        for dose in option.dosing:
            assert dose.text in review, f"{option.id}: dose text is not the review's"


def test_adult_card_shows_every_line_with_the_review_doses() -> None:
    text = plain(one_card(classic(*REFRACTORY_HIGH_GRADE))["detail"])
    for phrase in ADULT_DOSES:
        assert phrase in text
    for heading in ("First line", "Second line", "Salvage", "Caution"):
        assert heading in text
    assert "UNVERIFIED" in text and "twice daily" in text  # ruxolitinib "daily" ambiguity
    assert "pancytopenia" in text


def test_pediatric_card_shows_the_pediatric_doses() -> None:
    text = plain(one_card(classic(obs("29463-7", 25, "kg", day(10)), birth="2018-01-01"))["detail"])
    for phrase in PEDIATRIC_DOSES:
        assert phrase in text
    assert "up to 10–20 mg daily" not in text  # the >= 14 y ruxolitinib dose is not for an 8-year-old


def test_supportive_care_follows_hines_table_4() -> None:
    text = plain(one_card(classic())["detail"])
    for phrase in SUPPORTIVE:
        assert phrase in text
    # Register item 15: not the shorthand "cryo for fibrinogen < 150" (that is the diagnostic criterion only).
    assert "cryo for fibrinogen < 150" not in text and "cryoprecipitate for fibrinogen < 150" not in text


def test_tocilizumab_caveat_carries_the_reviews_evidence() -> None:
    text = plain(one_card(classic())["detail"])
    for phrase in ("infectious complications", "paradoxical", "macrophage activation syndrome", "IL-18"):
        assert phrase in text


def test_unverified_rxnorm_codes_never_reach_a_draft_order() -> None:
    # Reference 7.5: only methylprednisolone 6902 is verified; the other candidate codes are UNVERIFIED.
    cards = [
        one_card(classic()),
        one_card(classic(*REFRACTORY_HIGH_GRADE, obs("29463-7", 70, "kg", day(10)))),
    ]
    codes = {
        coding["code"]
        for card in cards
        for order in created(card, "MedicationRequest")
        for coding in order["medicationCodeableConcept"].get("coding", [])
    }
    assert codes <= {"6902"}
    texts = {o["medicationCodeableConcept"]["text"] for c in cards for o in created(c, "MedicationRequest")}
    assert {"Anakinra", "Ruxolitinib", "Emapalumab", "Etoposide"} <= texts


def test_weight_and_bsa_arithmetic_only_from_recorded_values() -> None:
    body = (obs("29463-7", 70, "kg", day(10)), obs("8302-2", 170, "cm", day(10)))
    text = plain(one_card(classic(*REFRACTORY_HIGH_GRADE, *body))["detail"])
    bsa = round(math.sqrt(170 * 70 / 3600), 2)  # Mosteller
    assert f"{bsa:g} m²" in text and "Mosteller" in text
    assert f"150 mg/m² x {bsa:g} m² = {round(150 * bsa, 1):g} mg" in text
    assert "1 mg/kg x 70 kg = 70 mg" in text  # emapalumab
    no_height = plain(one_card(classic(*REFRACTORY_HIGH_GRADE, body[0]))["detail"])
    assert "m² x" not in no_height and "per-m² doses are shown without arithmetic" in no_height
    no_weight = plain(one_card(classic(*REFRACTORY_HIGH_GRADE))["detail"])
    assert "mg/kg x" not in no_weight


def test_every_when_rule_is_implemented() -> None:
    from cds_service.cards.rules import applies

    result = result_of(classic())
    assessment = assess(result, load_card_content(KB))
    for option in load_card_content(KB).options:
        assert option.when in WHEN_RULES
        applies(option, result, assessment)


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
        ("treatments.yaml", lambda d: _option(d, "etoposide").update(rxnorm="72435"), "rxnorm"),
        (
            "treatments.yaml",
            lambda d: _option(d, "emapalumab").pop("status"),
            f"$.options[{EMAPALUMAB_INDEX}]",
        ),
        ("treatments.yaml", lambda d: _option(d, "anakinra").update(drug_class="aspirin"), "drug_class"),
        (
            "templates.yaml",
            lambda d: d["cards"]["patient_view"]["summary"].update(met="{nonsense}"),
            "summary.met",
        ),
        ("templates.yaml", lambda d: d["statements"].pop("caveat"), "statements"),
        ("templates.yaml", lambda d: d["indicator"]["warning"].append("always_warn"), "indicator.warning"),
        ("templates.yaml", lambda d: d["orderable_labs"].update(spo3={}), "orderable_labs"),
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


def test_the_shipped_content_loads() -> None:
    content = load_card_content(KB)
    assert {o.line for o in content.options} == {"supportive", "first", "second", "salvage", "caution"}
    assert all(o.citations for o in content.options)
