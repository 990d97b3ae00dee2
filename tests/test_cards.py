"""Card rendering: patient-view and order hooks, suggestions, links and invariants.

Expected content comes from the review (Fugere 2023, section 5), the clinical reference (5.4, Hines Table 4)
and the CDS Hooks reference (1.7-1.10), not from the renderer's own output.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.cards import (
    CardContext,
    CardInvariantError,
    check_card,
    render_order_hook,
    render_patient_view,
)
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine import EvaluationResult, evaluate
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.model import Gap
from tests.engine_helpers import CONTENT, KB
from tests.fhir_builders import RXNORM, bundle, car_t, crs, day, iso, medication, obs, patient

AT = day(13)  # day +13 after the axi-cel infusion of the builders


# --- builders ---


def classic(*extra: dict[str, Any], birth: str = "1970-05-01") -> dict[str, Any]:
    """Classic IEC-HS after CRS (resolved day +5): ferritin rising to 21000, transaminitis, low fibrinogen,
    new thrombocytopenia, fever, hypertriglyceridemia (the smoke case of the engine)."""
    return bundle(
        patient(birth=birth),
        car_t(),
        obs("2276-4", 400, "ng/mL", day(-1), high=300),
        crs(2, day(1), day(5)),
        obs("2276-4", 900, "ng/mL", day(8), high=300),
        obs("2276-4", 4000, "ng/mL", day(10), high=300),
        obs("2276-4", 21000, "ng/mL", day(12), high=300),
        obs("3255-7", 120, "mg/dL", day(12), low=200, high=400),
        obs("1920-8", 250, "U/L", day(12), high=40),
        obs("1742-6", 300, "U/L", day(12), high=40),
        obs("1920-8", 25, "U/L", day(-1), high=40),
        obs("777-3", 180, "10*3/uL", day(-1), low=150, high=400),
        obs("777-3", 60, "10*3/uL", day(12), low=150, high=400),
        obs("8310-5", 39.0, "Cel", day(12)),
        obs("2571-8", 300, "mg/dL", day(12)),
        *extra,
    )


def anakinra_at(when_day: float, hours: float = 0) -> dict[str, Any]:
    return medication("72435", "anakinra", day(when_day, hours))


def possible() -> dict[str, Any]:
    """The ferritin signal after CRS without fibrinogen or transaminases since the rise: IEC-HS possible."""
    return bundle(
        patient(),
        car_t(),
        obs("2276-4", 400, "ng/mL", day(-1), high=300),
        crs(2, day(1), day(5)),
        obs("2276-4", 900, "ng/mL", day(8), high=300),
        obs("2276-4", 4000, "ng/mL", day(10), high=300),
        obs("2276-4", 21000, "ng/mL", day(12), high=300),
        obs("777-3", 180, "10*3/uL", day(-1), low=150, high=400),
        obs("777-3", 60, "10*3/uL", day(12), low=150, high=400),
    )


def negative() -> dict[str, Any]:
    """Ferritin never above 2 x ULN or 2 x baseline: IEC-HS not met."""
    return bundle(
        patient(),
        car_t(),
        obs("2276-4", 300, "ng/mL", day(-1), high=300),
        obs("2276-4", 350, "ng/mL", day(9), high=300),
        obs("2276-4", 380, "ng/mL", day(12), high=300),
        crs(2, day(1), day(5)),
    )


def context(**overrides: Any) -> CardContext:
    counter = itertools.count(1)
    values: dict[str, Any] = {
        "service_id": "iec-hs-screen",
        "hook": "patient-view",
        "base_url": "https://cds.example.org",
        "smart_launch_url": None,
        "data_gaps": (),
        "uuid_factory": lambda: f"uuid-{next(counter)}",
        "fhir_server": None,
        "patient_id": "p1",
    }
    values.update(overrides)
    return CardContext(**values)


def result_of(data: dict[str, Any]) -> EvaluationResult:
    return evaluate(data, at=AT, knowledge=KB)


def one_card(data: dict[str, Any], at: Any = None, **kwargs: Any) -> dict[str, Any]:
    result = evaluate(data, at=at or AT, knowledge=KB)
    cards = render_patient_view(result, context(**kwargs), content=CONTENT, knowledge=KB)
    assert len(cards) == 1
    return cards[0]


def plain(markdown: str) -> str:
    """The text a reader sees: Markdown backslash escapes and HTML entities undone."""
    return html.unescape(re.sub(r"\\([\\`*_\[\]|~#])", r"\1", markdown))


def actions(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for s in card.get("suggestions", []) for a in s["actions"]]


def created(card: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        a["resource"]
        for a in actions(card)
        if a["type"] == "create" and a["resource"]["resourceType"] == resource_type
    ]


def drug_texts(card: dict[str, Any]) -> list[str]:
    return [r["medicationCodeableConcept"]["text"] for r in created(card, "MedicationRequest")]


# --- patient-view: a card read in ten seconds (issue 17, items 1, 4, 5, 7) ---


def test_classic_iec_hs_card_is_critical_with_status_grade_and_day_in_summary() -> None:
    card = one_card(classic(anakinra_at(12, 6)))
    assert card["indicator"] == "critical"  # IEC-HS met
    summary = card["summary"]
    assert len(summary) <= 140
    assert summary == "IEC-HS criteria met, grade 2 (at least), day +13 after axi-cel"


def test_detail_is_short_in_the_issue_order_without_tables() -> None:
    card = one_card(classic(anakinra_at(12, 6)))
    detail = card["detail"]
    assert len(detail) <= 2000
    headings = [line for line in detail.splitlines() if line.startswith("**") and line.endswith("**")]
    assert headings == ["**What is happening**", "**Therapy given**", "**Next step**"]
    assert not any(line.lstrip().startswith("|") for line in detail.splitlines())  # no table at all
    assert "Instruments side by side" not in detail and "UNVERIFIED in this evaluation" not in detail
    assert "dashboard" in detail  # the full evidence moved behind the link
    assert detail.count("UNVERIFIED") <= 1


def test_every_finding_states_value_time_and_threshold_with_a_citation() -> None:
    text = plain(one_card(classic())["detail"])
    findings = text.split("**What is happening**\n")[1].split("\n\n")[0].splitlines()
    assert 3 <= len(findings) <= 5
    ferritin = next(line for line in findings if line.startswith("- Ferritin"))
    assert "21,000 ng/mL" in ferritin and "day +12" in ferritin and "> 2 x ULN" in ferritin
    assert all(re.search(r"\[\d+(, \d+)*\]$", line) for line in findings)  # each keeps its citation


def test_a_criterion_of_several_analytes_shows_the_value_that_met_it() -> None:
    """AST > 5 x ULN, ALT not; new thrombocytopenia, ANC listed after it: the card shows AST and platelets."""
    data = classic(obs("751-8", 2.5, "10*3/uL", day(12, 1), low=1.5, high=7))
    for entry in data["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation" and resource["code"]["coding"][0]["code"] == "1742-6":
            resource["valueQuantity"]["value"] = 60  # ALT: above ULN, not 5 x ULN
    findings = plain(one_card(data)["detail"]).split("**What is happening**\n")[1].split("\n\n")[0]
    assert "- AST 250 U/L" in findings and "ALT" not in findings
    assert "- Platelets 60 x 10⁹/L" in findings and "ANC" not in findings


def test_units_and_numbers_are_written_for_people() -> None:
    text = plain(one_card(classic(obs("6301-6", 1.49, "{INR}", day(12), high=1.1)))["detail"])
    assert "Cel" not in text and "10*9/L" not in text and "{INR}" not in text
    assert "21,000 ng/mL" in text  # thousands separator
    assert "x 10⁹/L" in text  # superscript where Markdown allows (Unicode; cards carry no HTML)
    assert "project_derived" not in text  # citation ids are not shown; short names are
    assert "project rule (D)" in text


def test_a_generic_car_t_code_is_product_not_identified_never_investigational() -> None:
    data = classic()
    data["entry"][1]["resource"]["medicationCodeableConcept"] = {"text": "CAR-T cell infusion"}
    card = one_card(data)
    assert "not identified" in card["summary"] + card["detail"]
    assert "nvestigational" not in card["summary"] + card["detail"]


def test_possible_is_a_quiet_info_card_naming_the_gap_and_the_deciding_lab() -> None:
    assert IEC_HS.result(result_of(possible()).instruments).status == "possible"
    card = one_card(possible())
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Possible IEC-HS (no AST or ALT or fibrinogen since the ferritin rose)")
    assert created(card, "MedicationRequest") == []  # no drug drafts before IEC-HS is met
    codes = {r["code"]["coding"][0]["code"] for r in created(card, "ServiceRequest")}
    assert {"3255-7", "1920-8"} <= codes  # fibrinogen, AST: what would decide it


def _with_gaps(result: EvaluationResult, *gaps: Gap) -> EvaluationResult:
    iec = IEC_HS.result(result.instruments)
    return dataclasses.replace(
        result, instruments=result.instruments.replace(IEC_HS.id, dataclasses.replace(iec, gaps=gaps))
    )


def test_the_card_keys_on_the_gap_code_not_on_the_engines_words() -> None:
    result = result_of(possible())
    before = render_patient_view(result, context(), content=CONTENT, knowledge=KB)[0]
    reworded = tuple(
        dataclasses.replace(g, text="engine wording changed") for g in IEC_HS.result(result.instruments).gaps
    )
    after = render_patient_view(_with_gaps(result, *reworded), context(), content=CONTENT, knowledge=KB)[0]
    assert after["summary"] == before["summary"] and after["detail"] == before["detail"]
    assert "engine wording changed" not in after["summary"] + after["detail"]


@pytest.mark.parametrize("code", sorted(CONTENT.gap_words))
def test_every_engine_gap_code_reads_as_words_in_the_summary_and_detail(code: str) -> None:
    gap = Gap(code=code, text="(engine text)", analytes=("fibrinogen", "ast"))
    card = render_patient_view(
        _with_gaps(result_of(possible()), gap), context(), content=CONTENT, knowledge=KB
    )[0]
    words = CONTENT.gap_words[code]
    summary_words = words.summary.replace("{analytes}", "fibrinogen or AST").replace("{days}", "7")
    assert f"({summary_words})" in card["summary"]
    unseen = plain(card["detail"]).split("**What the service could not see**\n")[1].split("\n\n")[0]
    detail_words = words.detail.replace("{analytes}", "fibrinogen or AST").replace("{days}", "7")
    assert f"- {detail_words}" in unseen.splitlines()
    assert "{" not in card["summary"] + card["detail"] and code not in card["summary"]


def test_long_after_infusion_without_a_signal_there_is_no_card_and_no_lab_drafts() -> None:
    """Issue 17: 278 days after infusion with no recent labs gave an info card with 15 lab drafts."""
    late = bundle(patient(), car_t(), obs("2276-4", 400, "ng/mL", day(-1), high=300))
    assert (
        render_patient_view(
            evaluate(late, at=day(278), knowledge=KB), context(), content=CONTENT, knowledge=KB
        )
        == []
    )
    inside = one_card(late, at=day(20))  # inside the 100-day risk window: the screen speaks
    assert inside["indicator"] == "info" and "no ferritin in 7 days" in inside["summary"]
    assert [r["code"]["coding"][0]["code"] for r in created(inside, "ServiceRequest")] == ["2276-4"]


def test_late_inflammatory_signal_speaks_outside_the_risk_window() -> None:
    late = bundle(
        patient(),
        car_t(),
        obs("2276-4", 400, "ng/mL", day(-1), high=300),
        obs("2276-4", 2500, "ng/mL", day(276), high=300),
        obs("2276-4", 9000, "ng/mL", day(278), high=300),
    )
    cards = render_patient_view(
        evaluate(late, at=day(278, 6), knowledge=KB), context(), content=CONTENT, knowledge=KB
    )
    assert len(cards) == 1


@pytest.mark.parametrize("key", sorted(CONTENT.prefetch_gaps))
def test_a_data_gap_is_stated_on_the_card(key: str) -> None:
    card = one_card(classic(), data_gaps=(key,))
    assert f"- Not read in full: {CONTENT.prefetch_gaps[key]}" in plain(card["detail"]).splitlines()


def text_ferritin(text: str, when: Any, issued: Any = None) -> dict[str, Any]:
    """A ferritin result the lab sent as text (beyond the assay's range), not as a Quantity."""
    resource = obs("2276-4", 0, "ng/mL", when, high=300)
    del resource["valueQuantity"]
    resource["valueString"] = text
    if issued is not None:
        resource["issued"] = iso(issued)
    return resource


def unseen_lines(card: dict[str, Any]) -> list[str]:
    lines = plain(card["detail"]).split("**What the service could not see**")[1].split("\n\n")[0]
    return [line for line in lines.splitlines() if line.startswith("- ")]


def test_a_decisive_result_that_could_not_be_read_is_named_with_its_text() -> None:
    card = one_card(classic(text_ferritin(">100000", day(12, 6))))
    assert "- Ferritin result not readable (day +12 18:00): reported as text '>100000', not as a number" in (
        unseen_lines(card)
    )


def test_unreadable_results_are_counted_per_analyte_with_the_latest_reason() -> None:
    card = one_card(classic(text_ferritin("see note", day(11)), text_ferritin(">100000", day(12, 6))))
    assert unseen_lines(card) == [
        "- Ferritin: 2 results not readable, latest day +12 18:00: "
        "reported as text '>100000', not as a number"
    ]


@pytest.mark.parametrize(
    ("when", "issued"),
    [
        (day(2), None),  # before the 7-day window
        (day(13, 6), None),  # after the instant
        (day(12, 6), day(13, 2)),  # drawn before the instant, released after it: not on record then
    ],
)
def test_an_unreadable_result_outside_the_window_or_not_yet_on_record_is_not_named(
    when: Any, issued: Any
) -> None:
    card = one_card(classic(text_ferritin(">100000", when, issued)))
    assert "What the service could not see" not in card["detail"]


def test_an_unreadable_result_of_an_analyte_that_decides_nothing_is_not_on_the_card() -> None:
    triglycerides = obs("2571-8", 0, "mg/dL", day(12, 6))
    del triglycerides["valueQuantity"]
    triglycerides["valueString"] = "lipemic"
    card = one_card(classic(triglycerides))
    assert "What the service could not see" not in card["detail"]


def test_without_the_infusion_record_a_ferritin_signal_is_possible_not_silent() -> None:
    data = classic()
    data["entry"] = [e for e in data["entry"] if e["resource"]["resourceType"] != "MedicationAdministration"]
    result = result_of(data)
    assert not result.therapy.found
    assert (
        render_patient_view(result, context(), content=CONTENT, knowledge=KB) == []
    )  # nothing missing: no card
    cards = render_patient_view(
        result, context(data_gaps=("medicationAdministrations",)), content=CONTENT, knowledge=KB
    )
    assert [c["indicator"] for c in cards] == ["info"]
    assert cards[0]["summary"].startswith("Possible IEC-HS: ferritin 21,000 ng/mL")
    assert "medication administrations" in plain(cards[0]["detail"])


def test_acknowledged_card_is_one_line_info() -> None:
    card = one_card(classic(), acknowledged=True)
    assert card["indicator"] == "info" and "detail" not in card and "suggestions" not in card
    assert card["summary"].startswith("Already acknowledged: IEC-HS met, grade")


# --- therapy-aware advice (item 2) and clinical content (item 6) ---


def test_therapy_running_is_listed_and_never_suggested_again() -> None:
    card = one_card(classic(*(anakinra_at(12, h) for h in (0, 6, 12, 18))))
    text = plain(card["detail"])
    therapy = text.split("**Therapy given**\n")[1].split("\n\n")[0]
    assert "Anakinra: first dose day +12 12:00, last dose day +13 06:00, 4 given, running" in therapy
    assert "Anakinra" not in drug_texts(card)
    assert "next line becomes relevant: second line" in text
    assert "day +14 12:00" in text  # 48 h after the first dose at or after onset [D]


def test_first_line_without_therapy_offers_anakinra_and_a_corticosteroid_as_orderable_drafts() -> None:
    card = one_card(classic())
    assert drug_texts(card) == ["Anakinra", "Dexamethasone"]
    assert [s.get("isRecommended", False) for s in card["suggestions"][:2]] == [True, False]


def test_no_unverified_grade_unlocks_salvage_or_chooses_the_steroid_regimen() -> None:
    """Grade 4 by vasopressors (UNVERIFIED grading) changes nothing in the options."""
    plain_card = one_card(classic())
    grade_4 = one_card(classic(medication(None, "norepinephrine", day(12, 8))))
    assert "grade 4" in grade_4["summary"]
    assert drug_texts(grade_4) == drug_texts(plain_card) == ["Anakinra", "Dexamethasone"]
    assert "Etoposide" not in plain(grade_4["detail"]) and "Emapalumab" not in plain(grade_4["detail"])
    # the seed's condition is shown as words, not applied
    assert "considered for IEC-HS with refractory grade 4 CRS or end organ toxicities" in plain(
        grade_4["detail"]
    )


def test_lines_follow_the_seed_order_and_its_refractoriness_rule() -> None:
    first_line = (anakinra_at(10, 12), medication("3264", "dexamethasone 10 mg IV", day(10, 12)))
    second = one_card(classic(*first_line))
    # >= 48 h of first line, still met: ruxolitinib "in addition to corticosteroids" (not running any more)
    assert drug_texts(second) == ["Ruxolitinib", "Dexamethasone"]
    salvage = one_card(classic(*first_line, medication("1193326", "ruxolitinib", day(10, 13))))
    assert drug_texts(salvage) == ["Etoposide"]  # emapalumab has no RxNorm code: shown, never drafted
    assert "Emapalumab" in plain(salvage["detail"])
    assert "refractory to anti-cytokine treatments and corticosteroids" in plain(salvage["detail"])
    second_running = one_card(classic(*first_line, medication("1193326", "ruxolitinib", day(12, 13))))
    assert "Ruxolitinib" not in drug_texts(second_running) and "Etoposide" not in drug_texts(second_running)


def test_pediatric_card_shows_pediatric_text_only_with_daily_totals() -> None:
    child = classic(obs("29463-7", 25, "kg", day(11)), birth="2018-01-01")
    card = one_card(child)
    text = plain(card["detail"])
    assert "up to 10 mg/kg IV daily, or 4 mg/kg IV every 6 h" in text
    assert "4 mg/kg x 25 kg = 100 mg per dose = 400 mg/day (16 mg/kg/day)" in text  # daily total beside
    assert "10 mg/kg x 25 kg = 250 mg/day" in text  # the per-day ceiling
    assert "in adults" not in text and "Adults" not in text and "no pediatric dose" not in text.lower()
    assert "100–200 mg IV or SQ" not in text
    assert "Dexamethasone" not in drug_texts(card)  # the seed's standard regimen has no pediatric dose


def test_ruxolitinib_keeps_the_seeds_weight_based_wording_for_children() -> None:
    option = CONTENT.option("ruxolitinib")
    assert any(d.text == "weight-based dosing of 2.5–5 mg daily" for d in option.dosing)


# --- orderable suggestions (item 3) ---


def test_drug_drafts_are_rxnorm_coded_structured_and_valid_r4() -> None:
    card = one_card(classic(), user_id="Practitioner/u1", encounter_id="e1")
    orders = created(card, "MedicationRequest")
    assert orders
    for resource in orders:
        MedicationRequest.model_validate(resource)
        assert resource["status"] == "draft" and resource["intent"] == "proposal"
        coding = resource["medicationCodeableConcept"]["coding"][0]
        assert coding["system"] == RXNORM and coding["code"] in CONTENT.rxnorm
        assert any(
            f"verification status {CONTENT.rxnorm[coding['code']].status}" in n["text"]
            for n in resource["note"]
        )
        dosage = resource["dosageInstruction"][0]
        assert dosage["text"] and dosage["timing"]["repeat"]["periodUnit"] in {"h", "d", "wk"}
        dose = dosage["doseAndRate"][0]
        quantity = dose.get("doseQuantity") or dose["doseRange"]["high"]
        assert quantity["system"] == "http://unitsofmeasure.org" and quantity["code"] in {
            "mg",
            "mg/kg",
            "mg/m2",
        }
        # US Core MedicationRequest must-support elements the service knows
        for element in (
            "category",
            "reportedBoolean",
            "subject",
            "encounter",
            "authoredOn",
            "requester",
            "reasonCode",
        ):
            assert element in resource, element
        assert resource["requester"] == {"reference": "Practitioner/u1"}


def test_anakinra_draft_has_the_seed_range_as_dose_range_and_timing() -> None:
    order = next(
        r
        for r in created(one_card(classic()), "MedicationRequest")
        if "Anakinra" in r["medicationCodeableConcept"]["text"]
    )
    dosage = order["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseRange"]["low"]["value"] == 100
    assert dosage["doseAndRate"][0]["doseRange"]["high"]["value"] == 200
    assert dosage["timing"]["repeat"] == {"frequency": 1, "period": 6, "periodMax": 12, "periodUnit": "h"}
    assert dosage["route"]["coding"][0]["code"] == "47625008"


def test_per_kg_drafts_show_the_arithmetic_in_a_note() -> None:
    child = classic(obs("29463-7", 25, "kg", day(11)), birth="2018-01-01")
    order = next(
        r
        for r in created(one_card(child), "MedicationRequest")
        if "Anakinra" in r["medicationCodeableConcept"]["text"]
    )
    assert order["dosageInstruction"][0]["doseAndRate"][0]["doseRange"]["high"] == {
        "value": 250.0,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    assert any("10 mg/kg x 25 kg = 250 mg/day" in n["text"] for n in order["note"])


def test_lab_drafts_are_loinc_coded_valid_r4_service_requests() -> None:
    card = one_card(possible(), user_id="Practitioner/u1")
    labs = created(card, "ServiceRequest")
    assert labs
    for request in labs:
        ServiceRequest.model_validate(request)
        assert request["code"]["coding"][0]["system"] == "http://loinc.org"
        for element in ("status", "intent", "category", "code", "subject", "authoredOn", "requester"):
            assert element in request


@pytest.mark.parametrize(("minutes_after", "drafted"), [(0, False), (1, True)])
def test_a_lab_result_of_the_last_24_hours_needs_no_draft(minutes_after: int, drafted: bool) -> None:
    """Met: fibrinogen and platelets were drawn on day 12 (Hines Table 4 "daily" = 24 h [D])."""
    card = one_card(classic(), at=day(13) + timedelta(minutes=minutes_after))
    codes = {r["code"]["coding"][0]["code"] for r in created(card, "ServiceRequest")}
    assert ("3255-7" in codes) == drafted and ("777-3" in codes) == drafted


def test_the_sandbox_rx_view_can_take_the_suggestion() -> None:
    """The CDS Hooks Sandbox's medication reducer (cds-hooks/sandbox src/reducers/medication-reducers.js,
    TAKE_SUGGESTION) takes `medicationCodeableConcept.text` and `coding[0].code` as its prescribable and
    rebuilds its order with that RxNorm code; the fixture is an order shaped like the sandbox's own."""
    fixture = json.loads((PROJECT_ROOT / "fixtures" / "sandbox" / "rx-view-order.json").read_text())
    for resource in created(one_card(classic()), "MedicationRequest"):
        concept = resource["medicationCodeableConcept"]
        assert concept["text"] and concept["coding"][0]["code"]  # what the reducer requires
        prescribable = {"name": concept["text"], "id": concept["coding"][0]["code"]}
        rebuilt = {
            "text": prescribable["name"],
            "coding": [{"display": prescribable["name"], "system": RXNORM, "code": prescribable["id"]}],
        }
        shape = fixture["medicationCodeableConcept"]
        assert set(rebuilt) == set(shape) and set(rebuilt["coding"][0]) == set(shape["coding"][0])
        assert rebuilt["coding"][0]["system"] == shape["coding"][0]["system"]


def test_links_lead_with_the_dashboard_smart_link_with_compact_app_context() -> None:
    card = one_card(classic(), smart_launch_url="https://app.example.org/launch")
    smart = [link for link in card["links"] if link["type"] == "smart"]
    assert len(smart) == 1 and smart[0]["url"] == "https://app.example.org/launch"
    assert card["links"][0] is smart[0]
    assert json.loads(smart[0]["appContext"]) == {"patient": "p1", "at": AT.isoformat(), "view": "iec-hs"}


# --- order-select / order-sign ---


def sandbox_drafts(*resources: dict[str, Any]) -> dict[str, Any]:
    """draftOrders as the CDS Hooks Sandbox sends them (reference 4.2): no Bundle.type."""
    return {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}


def draft(rid: str, text: str, code: str | None = None) -> dict[str, Any]:
    """Non-conformant like the sandbox's: category is an object, no intent."""
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code}]
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "subject": {"reference": "Patient/p1"},
        "category": {"coding": [{"code": "inpatient"}]},
        "medicationCodeableConcept": concept,
    }


def order_cards(
    data: dict[str, Any], drafts: dict[str, Any], selections: list[str] | None = None
) -> list[dict[str, Any]]:
    return render_order_hook(
        result_of(data), drafts, selections, context(hook="order-sign"), content=CONTENT, knowledge=KB
    )


def test_tocilizumab_draft_with_iec_hs_met_gives_a_replace_with_anakinra_warning() -> None:
    cards = order_cards(classic(), sandbox_drafts(draft("toci-1", "Tocilizumab 8 mg/kg IV", "612865")))
    assert [c["indicator"] for c in cards] == ["warning"]
    card = cards[0]
    assert len(card["summary"]) < 140 and "Tocilizumab" in card["summary"]
    text = plain(card["detail"])
    assert "infectious complications" in text and "paradoxical" in text
    kinds = [(a["type"], a.get("resourceId")) for a in card["suggestions"][0]["actions"]]
    assert kinds == [("delete", "MedicationRequest/toci-1"), ("create", None)]


def test_tocilizumab_draft_while_anakinra_runs_does_not_propose_anakinra_again() -> None:
    cards = order_cards(classic(anakinra_at(12, 6)), sandbox_drafts(draft("toci-1", "tocilizumab")))
    card = cards[0]
    assert "anakinra already running" in card["summary"]
    assert [a["type"] for a in card["suggestions"][0]["actions"]] == ["delete"]
    assert "Already running: Anakinra: one dose day +12 18:00." in plain(card["detail"])


def test_no_tocilizumab_warning_with_active_crs() -> None:
    drafts = sandbox_drafts(draft("toci-1", "tocilizumab"))
    assert order_cards(classic(crs(2, day(11))), drafts) == []


def test_an_order_for_a_running_drug_is_an_info_card_saying_since_when() -> None:
    cards = order_cards(classic(anakinra_at(12, 6)), sandbox_drafts(draft("a", "anakinra")))
    assert [c["indicator"] for c in cards] == ["info"]
    assert "already running" in cards[0]["summary"]


def test_iec_hs_directed_draft_is_info_even_at_grade_4() -> None:
    cards = order_cards(
        classic(medication(None, "norepinephrine", day(12, 8))), sandbox_drafts(draft("a", "anakinra"))
    )
    assert [c["indicator"] for c in cards] == ["info"]
    assert "100–200 mg IV or SQ every 6–12 h" in plain(cards[0]["detail"])


def test_order_select_only_considers_selected_drafts_and_unrelated_drafts_give_nothing() -> None:
    drafts = sandbox_drafts(draft("toci-1", "tocilizumab"))
    assert order_cards(classic(), drafts, ["MedicationRequest/other"]) == []
    assert len(order_cards(classic(), drafts, ["MedicationRequest/toci-1"])) == 1
    assert order_cards(classic(), sandbox_drafts(draft("x", "acetaminophen 500 mg"))) == []


# --- invariants ---


CASES: list[Callable[[], list[dict[str, Any]]]] = [
    lambda: render_patient_view(
        result_of(classic()),
        context(smart_launch_url="https://a.example/launch"),
        content=CONTENT,
        knowledge=KB,
    ),
    lambda: render_patient_view(result_of(possible()), context(), content=CONTENT, knowledge=KB),
    lambda: order_cards(classic(), sandbox_drafts(draft("t", "tocilizumab"), draft("a", "anakinra"))),
]


@pytest.mark.parametrize("render", CASES)
def test_every_card_passes_the_invariants(render: Callable[[], list[dict[str, Any]]]) -> None:
    for card in render():
        check_card(card)
        assert all(r["display"] for r in card["overrideReasons"])
        assert card["source"]["label"]


def _good() -> dict[str, Any]:
    return one_card(classic())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(summary="x" * 140), "must be < 140"),
        (lambda c: c.update(indicator="hard-stop"), "indicator"),
        (lambda c: c.pop("selectionBehavior"), "selectionBehavior"),
        (lambda c: c["overrideReasons"][0].pop("display"), "display"),
        (lambda c: c["source"].pop("label"), "label"),
        (lambda c: c.update(detail="<b>bold</b>"), "raw HTML"),
        (lambda c: c.update(links=[]), "empty"),
        (lambda c: c["source"].update(url=""), "empty"),
        (lambda c: c["source"].update(icon=None), r"card\.source\.icon: null or empty"),
        (
            lambda c: c["suggestions"][0]["actions"][0]["resource"].update(note={}),
            r"card\.suggestions\[0\]\.actions\[0\]\.resource\.note: null or empty",
        ),
        (lambda c: c["overrideReasons"].append({}), r"card\.overrideReasons\[\d+\]: null or empty"),
    ],
)
def test_invariants_reject_bad_cards(mutate: Callable[[dict[str, Any]], Any], message: str) -> None:
    card = _good()
    mutate(card)
    with pytest.raises(CardInvariantError, match=message):
        check_card(card)


@pytest.mark.parametrize("text", ['say "no"', "null, [] and {}", 'ends with a quote"', "nullable"])
def test_text_that_looks_empty_is_not_an_empty_element(text: str) -> None:
    """Text holding "null", [] or {} is not an empty element; an actually empty element beside it is found."""
    card = _good()
    card["detail"] = card["detail"] + " " + text
    card["suggestions"][0]["label"] = text
    check_card(card)
    card["suggestions"][0]["actions"][0]["description"] = ""
    with pytest.raises(CardInvariantError, match=r"suggestions\[0\]\.actions\[0\]\.description"):
        check_card(card)


class _Text(str):
    __slots__ = ()


class _Object(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["source"].update(label=_Text("")), r"card\.source\.label: null or empty"),
        (lambda c: c.update(source=_Object(label="x", topic=_Object())), r"card\.source\.topic: null"),
        (lambda c: c["links"][0].update(label=_Text("dashboard")), None),
    ],
)
def test_subclasses_of_json_types_are_walked_the_same_way(
    mutate: Callable[[dict[str, Any]], Any], message: str | None
) -> None:
    card = _good()
    mutate(card)
    if message is None:
        check_card(card)
    else:
        with pytest.raises(CardInvariantError, match=message):
            check_card(card)
