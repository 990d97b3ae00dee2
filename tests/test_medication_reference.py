"""Medications named through `medicationReference`, as EHRs send them: a Medication the prefetch did not
include (only the reference's display is there), an absolute or versioned reference to one it did, a
contained Medication, and a draft order whose Medication travels in the draft Bundle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cds_service.cards.orders import classify_drafts
from cds_service.engine import evaluate
from cds_service.engine.instruments.registry import ASTCT_CRS
from cds_service.web.app import create_app
from tests.cds_helpers import car_t_patient, dev_config, for_patient, full_prefetch, hook_body, plain_markdown
from tests.engine_helpers import KB
from tests.fhir_builders import RXNORM, T0, bundle, car_t, day, infusion, iso, medication, obs, patient

TEMPERATURE = "8310-5"


def by_reference(resource: dict[str, Any], reference: str | None, display: str | None) -> dict[str, Any]:
    """The same administration or order, naming its drug by reference instead of a CodeableConcept."""
    del resource["medicationCodeableConcept"]
    resource["medicationReference"] = {
        **({"reference": reference} if reference else {}),
        **({"display": display} if display else {}),
    }
    return resource


def medication_resource(mid: str, rxnorm: str, display: str) -> dict[str, Any]:
    return {
        "resourceType": "Medication",
        "id": mid,
        "code": {"coding": [{"system": RXNORM, "code": rxnorm, "display": display}]},
    }


def fever() -> list[dict[str, Any]]:
    return [
        *(obs(TEMPERATURE, 38.6, "Cel", day(3, h)) for h in range(0, 12, 4)),
        obs(TEMPERATURE, 37.0, "Cel", day(3, 12)),
    ]


def crs_grade(*resources: dict[str, Any]) -> int | None:
    result = evaluate(bundle(patient(), car_t(), *fever(), *resources), knowledge=KB, at=day(3, 22))
    return ASTCT_CRS.result(result.instruments).max_grade


def test_a_vasopressor_named_only_by_the_references_display_is_counted() -> None:
    drip = by_reference(
        infusion("x", day(3, 4), day(3, 20)),
        "Medication/eRx-81723",  # not in the prefetch: no _include
        "norepinephrine 4 mg in 250 mL sodium chloride 0.9 % infusion",
    )
    assert crs_grade(drip) == 3


def test_a_reference_without_a_display_to_a_medication_not_fetched_is_not_guessed() -> None:
    drip = by_reference(infusion("x", day(3, 4), day(3, 20)), "Medication/eRx-81723", None)
    without = crs_grade()
    assert crs_grade(drip) == without and without != 3


def test_an_absolute_versioned_reference_finds_the_included_medication() -> None:
    given = by_reference(
        car_t(),
        "https://ehr.example.org/fhir/R4/Medication/axi-1/_history/3",
        None,
    )
    med = medication_resource("axi-1", "1987402", "axicabtagene ciloleucel")
    result = evaluate(bundle(patient(), given, med), knowledge=KB, at=day(5))
    assert result.therapy.product_id == "axicabtagene-ciloleucel"
    assert result.therapy.infusion_time is not None and iso(result.therapy.infusion_time) == iso(T0)


def test_a_contained_medication_is_read() -> None:
    given = by_reference(car_t(), "#med", None)
    given["contained"] = [{**medication_resource("med", "1987402", "axicabtagene ciloleucel")}]
    result = evaluate(bundle(patient(), given), knowledge=KB, at=day(5))
    assert result.therapy.product_id == "axicabtagene-ciloleucel"


def test_a_draft_order_names_its_drug_by_a_medication_in_the_draft_bundle() -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "Medication/toci"},
    }
    drafts = bundle(order, medication_resource("toci", "612865", "tocilizumab"))
    classified = classify_drafts(KB, drafts, ["MedicationRequest/draft-1"])
    assert [(d.reference, d.drug_class) for d in classified] == [("MedicationRequest/draft-1", "tocilizumab")]


def test_a_draft_order_with_only_a_display_is_classified_by_it() -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-2",
        "status": "draft",
        "intent": "order",
        "medicationReference": {"reference": "Medication/unknown", "display": "Actemra 400 mg IV"},
    }
    classified = classify_drafts(KB, bundle(order), None)
    assert [d.drug_class for d in classified] == ["tocilizumab"]


def test_through_the_hook_an_ehr_shaped_record_reads_its_drugs_and_names_a_text_ferritin(
    tmp_path: Path,
) -> None:
    """The CDS Hooks path with data as an EHR sends it: the CAR-T product and an anakinra course named only
    by a Medication reference's display, temperatures coded as oral, and the latest ferritin sent as text.
    The card lists anakinra as running and does not offer it, and names the ferritin it could not read."""
    now = datetime.now(UTC)
    infusion = now - timedelta(days=10)  # as car_t_patient infuses
    resources = car_t_patient("ehr-1", now)
    for resource in resources:
        if resource["resourceType"] == "MedicationAdministration":  # the CAR-T product
            by_reference(resource, "Medication/erx-axi", "axicabtagene ciloleucel (YESCARTA) suspension")
    anakinra = [
        by_reference(
            medication(None, "x", now - timedelta(hours=h)),
            "Medication/erx-77",
            "anakinra (KINERET) injection 100 mg/0.67 mL",
        )
        for h in (30, 24, 18, 12, 6)
    ]
    oral = [obs("8331-1", 36.8, "Cel", infusion + timedelta(days=d, hours=2)) for d in range(0, 10)]
    text_value = obs("2276-4", 0, "ng/mL", now - timedelta(hours=2), high=300)
    del text_value["valueQuantity"]
    text_value["valueString"] = ">100000"
    record = [*resources, *for_patient("ehr-1", [*anakinra, *oral, text_value])]
    app = create_app(dev_config(tmp_path))
    response = app.test_client().post(
        "/cds-services/iec-hs-screening",
        json=hook_body("patient-view", "ehr-1", prefetch=full_prefetch(record)),
    )
    assert response.status_code == 200
    card = response.get_json()["cards"][0]
    detail = plain_markdown(card["detail"])
    assert card["summary"].endswith("day +10 after axi-cel")
    therapy = detail.split("**Therapy given**\n")[1].split("\n\n")[0]
    assert "Anakinra: first dose" in therapy and "running" in therapy
    drafted = [
        a["resource"]["medicationCodeableConcept"]["text"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
    ]
    assert "Anakinra" not in drafted
    assert "Ferritin result not readable" in detail and "reported as text '>100000'" in detail
