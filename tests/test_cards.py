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
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest
from hypothesis import given
from hypothesis import strategies as st

from cds_service.cards import (
    CardContext,
    CardInvariantError,
    check_card,
    render_order_hook,
    render_patient_view,
)
from cds_service.cards.markdown import md
from cds_service.engine import EvaluationResult, evaluate
from cds_service.engine.instruments.registry import HSCORE, IEC_HS
from tests.engine_helpers import CONTENT, KB
from tests.fhir_builders import RXNORM, bundle, car_t, crs, day, medication, obs, patient

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


def one_card(data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    cards = render_patient_view(result_of(data), context(**kwargs), content=CONTENT, knowledge=KB)
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


# --- patient-view ---


def test_classic_iec_hs_card_is_critical_with_status_grade_and_day_in_summary() -> None:
    card = one_card(classic(anakinra_at(12, 6)))
    assert card["indicator"] == "critical"  # IEC-HS met (issue 4: critical when met)
    summary = card["summary"]
    assert len(summary) < 140
    assert "IEC-HS criteria met" in summary
    assert "grade 2" in summary and "at least" in summary
    assert "day +13" in summary and "axi-cel" in summary


def test_detail_shows_every_instrument_the_caveat_and_the_grade_basis() -> None:
    text = plain(one_card(classic(anakinra_at(12, 6)))["detail"])
    for instrument in ("ASTCT IEC-HS", "HScore", "HLH-2004", "HLH-94", "CARTOX", "Shah"):
        assert instrument in text
    assert "false negatives" in text and "false positives" in text and "Kim" in text  # review section 2
    assert "Basis: IEC-HS-directed therapy: anakinra" in text
    assert "Could not check:" in text
    assert "UNVERIFIED" in text  # grading not checked against Hines (reference 5.3)
    assert "176 (range 176-301" in text and "54-70%" in text  # HScore, probability band, min-max
    assert "3/8 met, 5 unknown" in text  # HLH-2004 n/8 with unknowns
    assert "Day +13" in text and "CRS: resolved" in text
    assert "Table 5" in text and "infection" in text  # alternatives to exclude (Hines Table 5)


def test_detail_shows_criteria_values_against_thresholds() -> None:
    text = plain(one_card(classic())["detail"])
    assert "| Hypofibrinogenemia (< 150 mg/dL or < LLN)" in text
    assert "Fibrinogen 120 mg/dL" in text
    assert "Ferritin 21000 ng/mL" in text
    assert "no data: LDH" in text


def test_detail_is_markdown_without_raw_html_even_with_hostile_data() -> None:
    card = one_card(classic(), data_gaps=("<img src=x onerror=alert(1)> & more",))
    assert "<" not in card["detail"]
    assert "&lt;img src=x" in card["detail"]
    assert "10\\*9/L" in card["detail"]  # UCUM units cannot become emphasis


def test_no_card_without_iec_therapy() -> None:
    data = bundle(patient(), obs("2276-4", 21000, "ng/mL", day(12), high=300))
    assert render_patient_view(result_of(data), context(), content=CONTENT, knowledge=KB) == []


def test_negative_screen_gives_no_card_by_default_and_an_info_card_on_request() -> None:
    result = result_of(negative())
    assert IEC_HS.result(result.instruments).status == "not-met"
    assert render_patient_view(result, context(), content=CONTENT, knowledge=KB) == []
    cards = render_patient_view(result, context(), emit_negative=True, content=CONTENT, knowledge=KB)
    assert [c["indicator"] for c in cards] == ["info"]
    assert cards[0]["summary"].startswith("IEC-HS criteria not met")


def test_possible_iec_hs_is_a_quiet_card_naming_the_gap() -> None:
    """A ferritin rising again after CRS without an HLH-specific finding yet: "possible", not critical."""
    data = bundle(
        patient(),
        car_t(),
        obs("2276-4", 400, "ng/mL", day(-1), high=300),
        obs("2276-4", 1800, "ng/mL", day(3), high=300),
        obs("2276-4", 800, "ng/mL", day(7), high=300),
        obs("2276-4", 2000, "ng/mL", day(9), high=300),
        crs(2, day(1), day(5)),
    )
    assert IEC_HS.result(result_of(data).instruments).status == "possible"
    card = one_card(data)
    assert card["indicator"] == "info"
    assert "Possible IEC-HS" in card["summary"]
    assert created(card, "MedicationRequest") == []  # no drug drafts before IEC-HS is met
    codes = {r["code"]["coding"][0]["code"] for r in created(card, "ServiceRequest")}
    assert "3255-7" in codes  # fibrinogen LOINC (reference 7.1): what would decide it


def test_hscore_at_cutoff_warns_even_when_iec_hs_is_not_met() -> None:
    result = result_of(negative())
    hscore = dataclasses.replace(HSCORE.result(result.instruments), score=169, cutoff=169)
    instruments = result.instruments.replace("hscore", hscore)
    cards = render_patient_view(
        dataclasses.replace(result, instruments=instruments), context(), content=CONTENT, knowledge=KB
    )
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "HScore 169" in cards[0]["summary"]


def test_grade_4_is_critical_and_offers_pulse_methylprednisolone_with_verified_rxnorm() -> None:
    card = one_card(
        classic(medication(None, "norepinephrine", day(12, 8)), obs("29463-7", 70, "kg", day(10)))
    )
    assert card["indicator"] == "critical"
    assert "grade 4" in card["summary"]
    pulse = [
        r
        for r in created(card, "MedicationRequest")
        if r["medicationCodeableConcept"]["text"] == "Methylprednisolone"
    ]
    assert len(pulse) == 1
    assert pulse[0]["medicationCodeableConcept"]["coding"] == [{"system": RXNORM, "code": "6902"}]  # [V] 7.5
    assert "1–2 mg/kg x 70 kg = 70–140 mg" in pulse[0]["dosageInstruction"][0]["text"]
    # Review 5.2: the standard dexamethasone regimen is for patients without high-grade end organ damage.
    assert "Dexamethasone" not in drug_texts(card)


# --- suggestions ---


def test_suggestions_are_valid_r4_fhir_drafts() -> None:
    card = one_card(classic())
    assert card["selectionBehavior"] == "any"
    resources = created(card, "MedicationRequest") + created(card, "ServiceRequest")
    assert resources
    for resource in resources:
        model = MedicationRequest if resource["resourceType"] == "MedicationRequest" else ServiceRequest
        model.model_validate(resource)
        assert resource["status"] == "draft" and resource["intent"] == "proposal"
        assert resource["subject"] == {"reference": "Patient/p1"}
    for request in created(card, "ServiceRequest"):
        assert request["code"]["coding"][0]["system"] == "http://loinc.org"


def test_first_line_anakinra_is_the_recommended_draft_with_the_review_dose_and_no_unverified_code() -> None:
    card = one_card(classic())
    recommended = [s for s in card["suggestions"] if s.get("isRecommended")]
    assert len(recommended) == 1
    order = recommended[0]["actions"][0]["resource"]
    assert order["medicationCodeableConcept"] == {"text": "Anakinra"}  # RxNorm 72435 is UNVERIFIED (7.5)
    assert order["dosageInstruction"] == [{"text": "Adults: 100–200 mg IV or SQ every 6–12 h"}]
    assert "doseAndRate" not in order["dosageInstruction"][0]  # a range, never one invented dose
    assert "Fugere" in order["note"][0]["text"]


def test_uuids_come_from_the_factory_and_output_is_deterministic() -> None:
    first = one_card(classic())
    second = one_card(classic())
    assert first == second
    assert first["uuid"] == "uuid-1"
    assert all(s["uuid"].startswith("uuid-") for s in first["suggestions"])


def test_pediatric_patient_gets_pediatric_anakinra_dosing_with_weight_arithmetic() -> None:
    card = one_card(classic(obs("29463-7", 25, "kg", day(10)), birth="2018-01-01"))  # age 8, 25 kg
    text = plain(card["detail"])
    assert "up to 10 mg/kg IV daily, or 4 mg/kg IV every 6 h" in text  # review 5.3, pediatric
    assert "4 mg/kg x 25 kg = 100 mg" in text
    assert "10 mg/kg x 25 kg = 250 mg" in text
    assert "100–200 mg IV or SQ" not in text  # adult dosing not shown for a child
    anakinra = [
        r for r in created(card, "MedicationRequest") if r["medicationCodeableConcept"]["text"] == "Anakinra"
    ]
    assert "4 mg/kg x 25 kg = 100 mg" in anakinra[0]["dosageInstruction"][0]["text"]
    assert "Dexamethasone" not in drug_texts(card)  # the review gives no pediatric dose for that regimen


def test_second_line_is_suggested_after_48_h_of_first_line_therapy_with_iec_hs_still_met() -> None:
    late = one_card(classic(anakinra_at(10, 12)))  # 72 h before day +13, after the onset estimate
    assert "Ruxolitinib" in drug_texts(late)
    assert "Anakinra" not in drug_texts(late)  # already given: escalate, don't re-order
    early = one_card(classic(anakinra_at(12, 6)))  # 18 h before
    assert "Ruxolitinib" not in drug_texts(early)
    never = one_card(classic())
    assert "Ruxolitinib" not in drug_texts(never)


def test_corticosteroids_given_for_crs_before_iec_hs_onset_do_not_start_the_48_h_clock() -> None:
    card = one_card(classic(medication(None, "dexamethasone", day(2))))
    assert "Ruxolitinib" not in drug_texts(card)


def test_ruxolitinib_text_carries_the_age_dose_and_the_unverified_daily_note() -> None:
    card = one_card(classic(anakinra_at(10, 12)))
    order = next(
        r
        for r in created(card, "MedicationRequest")
        if r["medicationCodeableConcept"]["text"] == "Ruxolitinib"
    )
    assert order["dosageInstruction"] == [{"text": "Age 14 y or older: up to 10–20 mg daily"}]
    assert any("UNVERIFIED" in note["text"] for note in order["note"])


# --- links ---


def test_links_include_the_astct_paper_and_a_smart_link_with_compact_app_context() -> None:
    card = one_card(classic(), smart_launch_url="https://app.example.org/launch")
    absolute = [link for link in card["links"] if link["type"] == "absolute"]
    assert any(link["url"] == "https://doi.org/10.1016/j.jtct.2023.03.006" for link in absolute)
    smart = [link for link in card["links"] if link["type"] == "smart"]
    assert len(smart) == 1 and smart[0]["url"] == "https://app.example.org/launch"
    assert " " not in smart[0]["appContext"]
    assert json.loads(smart[0]["appContext"]) == {"patient": "p1", "at": AT.isoformat(), "view": "iec-hs"}
    without = one_card(classic())
    assert all(link["type"] == "absolute" for link in without["links"])


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


def test_tocilizumab_draft_without_active_crs_and_iec_hs_met_gives_a_replace_with_anakinra_warning() -> None:
    cards = order_cards(classic(), sandbox_drafts(draft("toci-1", "Tocilizumab 8 mg/kg IV", "612865")))
    assert [c["indicator"] for c in cards] == ["warning"]
    card = cards[0]
    assert len(card["summary"]) < 140 and "Tocilizumab" in card["summary"]
    text = plain(card["detail"])
    assert "infectious complications" in text and "paradoxical" in text and "IL-18" in text  # review 5.5
    (suggestion,) = card["suggestions"]
    kinds = [(a["type"], a.get("resourceId")) for a in suggestion["actions"]]
    assert kinds == [("delete", "MedicationRequest/toci-1"), ("create", None)]
    anakinra = suggestion["actions"][1]["resource"]
    MedicationRequest.model_validate(anakinra)
    assert anakinra["medicationCodeableConcept"]["text"] == "Anakinra"


def test_no_second_anakinra_draft_when_one_is_already_in_the_session() -> None:
    drafts = sandbox_drafts(draft("toci-1", "tocilizumab"), draft("a-1", "anakinra 100 mg"))
    cards = order_cards(classic(), drafts, ["MedicationRequest/toci-1"])
    (suggestion,) = cards[0]["suggestions"]
    assert [a["type"] for a in suggestion["actions"]] == ["delete"]


def test_siltuximab_matched_by_text_also_warns() -> None:
    cards = order_cards(classic(), sandbox_drafts(draft("s-1", "Siltuximab 11 mg/kg")))
    assert [c["indicator"] for c in cards] == ["warning"]


def test_no_tocilizumab_warning_with_active_crs() -> None:
    drafts = sandbox_drafts(draft("toci-1", "tocilizumab", "612865"))
    assert order_cards(classic(crs(2, day(11))), drafts) == []  # new CRS episode, still active
    result = dataclasses.replace(result_of(classic()), crs_status="active")  # isolate the CRS rule
    assert render_order_hook(result, drafts, None, context(), content=CONTENT, knowledge=KB) == []


def test_sandbox_shaped_draft_orders_parse_even_when_incomplete() -> None:
    bare = {"resourceType": "MedicationRequest", "id": "r0", "status": "draft", "category": {"coding": []}}
    weird = {"resourceType": "Bundle", "entry": [{"resource": bare}, {"nope": 1}, "junk"]}
    assert order_cards(classic(), weird) == []
    assert order_cards(classic(), {"resourceType": "Bundle"}) == []


def test_anakinra_draft_shows_current_grade_and_missing_monitoring_labs() -> None:
    cards = order_cards(classic(anakinra_at(12, 6)), sandbox_drafts(draft("a-1", "Anakinra 100 mg SQ")))
    assert [c["indicator"] for c in cards] == ["info"]
    card = cards[0]
    assert "grade 2" in card["summary"] and "Anakinra" in card["summary"]
    assert "100–200 mg IV or SQ every 6–12 h" in plain(card["detail"])
    labs = created(card, "ServiceRequest")
    assert labs and all(r["category"][0]["coding"][0]["code"] == "108252007" for r in labs)
    for request in labs:
        ServiceRequest.model_validate(request)


def test_iec_hs_directed_draft_at_grade_4_is_critical() -> None:
    data = classic(medication(None, "norepinephrine", day(12, 8)))
    cards = order_cards(data, sandbox_drafts(draft("a-1", "anakinra")))
    assert [c["indicator"] for c in cards] == ["critical"]


def test_order_select_only_considers_selected_drafts() -> None:
    drafts = sandbox_drafts(draft("toci-1", "tocilizumab"), draft("other", "acetaminophen"))
    assert order_cards(classic(), drafts, ["MedicationRequest/other"]) == []
    assert len(order_cards(classic(), drafts, ["MedicationRequest/toci-1"])) == 1


def test_unrelated_drafts_and_no_therapy_give_no_order_card() -> None:
    assert order_cards(classic(), sandbox_drafts(draft("x", "acetaminophen 500 mg"))) == []
    no_therapy = bundle(patient(), obs("2276-4", 21000, "ng/mL", day(12), high=300))
    assert order_cards(no_therapy, sandbox_drafts(draft("t", "tocilizumab"))) == []


# --- escaping and invariants ---


@given(st.text(max_size=200))
def test_markdown_escaping_round_trips_and_never_leaves_html(text: str) -> None:
    escaped = md(text)
    assert "<" not in escaped and "\n" not in escaped
    assert plain(escaped) == " ".join(text.split())


CASES: list[Callable[[], list[dict[str, Any]]]] = [
    lambda: render_patient_view(
        result_of(classic()),
        context(smart_launch_url="https://a.example/launch"),
        content=CONTENT,
        knowledge=KB,
    ),
    lambda: render_patient_view(
        result_of(negative()), context(), emit_negative=True, content=CONTENT, knowledge=KB
    ),
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
