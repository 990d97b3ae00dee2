"""Draft FHIR R4 resources for card suggestions: MedicationRequests for the next step's options,
ServiceRequests for the labs that would decide something now, and the CDS Hooks suggestion/action wrappers.

A draft is a proposal (status `draft`, intent `proposal`) that an EHR can turn into an order:

* MedicationRequest: `medicationCodeableConcept` with the RxNorm code of cards/treatments.yaml (its
  verification status from mappings/medications.yaml is stated in a note), the seed's dose as structured
  `dosageInstruction` (`doseAndRate.doseQuantity` or `doseRange` in UCUM, `timing.repeat`, `route` where the
  seed states one) with the verbatim text, and the weight- or BSA-based arithmetic in a note. A per-kg or
  per-m² dose is in mg only from a recorded weight (and height); otherwise it stays in mg/kg or mg/m².
  An option without an RxNorm code is never drafted.
* ServiceRequest: LOINC-coded, category "Laboratory procedure".
Both carry the US Core must-support elements the service knows: status, intent, category, code/medication,
subject, encounter (when the hook names one), authoredOn, requester (the hook's user), reasonCode,
reportedBoolean (MedicationRequest) and dosageInstruction.text/timing/doseAndRate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.cards.common import CardContext
from cds_service.cards.content import CardContent, Dose, Option, OrderDose
from cds_service.cards.dosing import Body, arithmetic, doses_for, labelled
from cds_service.engine.catalog import LOINC, RXNORM
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult

UCUM = "http://unitsofmeasure.org"
REASON_TEXT = "Immune effector cell-associated HLH-like syndrome (IEC-HS)"
STATUS_WORDS = {"V": "verified", "S": "from the seed only", "R": "UNVERIFIED", "D": "project-derived"}


@dataclass(frozen=True, slots=True)
class LabGap:
    analyte: str
    display: str
    loinc: str
    loinc_display: str
    reason: str


def _loinc_display(kb: Knowledge, analyte: str, code: str) -> str:
    codes = kb.analytes[analyte]["codes"]
    return str(next((c["display"] for c in codes if c["code"] == code), kb.display(analyte)))


def lab_gap(kb: Knowledge, analyte: str, reason: str) -> LabGap | None:
    code = kb.first_loinc(analyte)
    if code is None:
        return None
    return LabGap(analyte, kb.display(analyte), code, _loinc_display(kb, analyte, code), reason)


def deciding_labs(
    result: EvaluationResult, content: CardContent, kb: Knowledge, analytes: Iterable[str], reason: str
) -> tuple[LabGap, ...]:
    """Orderable labs among `analytes` with no result in the last `lab_recent_hours` (24 h [D]), in
    cards/templates.yaml order."""
    wanted = set(analytes)
    recent = timedelta(hours=content.lab_recent_hours)
    latest = {lab.analyte: lab for lab in result.latest}
    gaps = []
    for analyte in content.orderable_labs:
        last = latest.get(analyte)
        if analyte in wanted and (last is None or result.at - last.time > recent):
            gap = lab_gap(kb, analyte, reason)
            if gap is not None:
                gaps.append(gap)
    return tuple(gaps)


def _common(ctx: CardContext, authored: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {"subject": {"reference": f"Patient/{ctx.patient_id}"}}
    if ctx.encounter_id:
        out["encounter"] = {"reference": f"Encounter/{ctx.encounter_id}"}
    out["authoredOn"] = authored.date().isoformat()
    if ctx.user_id and "/" in ctx.user_id:
        out["requester"] = {"reference": ctx.user_id}
    return out


def service_request(
    gap: LabGap, ctx: CardContext, content: CardContent, authored: datetime
) -> dict[str, Any]:
    common = _common(ctx, authored)
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "category": [{"coding": [dict(content.lab_category)]}],
        "code": {
            "coding": [{"system": LOINC, "code": gap.loinc, "display": gap.loinc_display}],
            "text": gap.display,
        },
        **common,
        "reasonCode": [{"text": f"IEC-HS screening: {gap.reason}"}],
    }


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(value, 1), "unit": unit, "system": UCUM, "code": unit}


def _dose(dose: OrderDose, body: Body) -> tuple[dict[str, Any], str]:
    """doseQuantity or doseRange, in mg when the weight / BSA is recorded, else in the seed's per-kg unit."""
    factor, unit = 1.0, dose.unit
    if dose.unit == "mg/kg" and body.weight_kg is not None:
        factor, unit = body.weight_kg, "mg"
    elif dose.unit == "mg/m2" and body.bsa_m2 is not None:
        factor, unit = body.bsa_m2, "mg"
    if dose.value is not None:
        return {"doseQuantity": _quantity(dose.value * factor, unit)}, unit
    dose_range: dict[str, Any] = {"high": _quantity((dose.high or 0.0) * factor, unit)}
    if dose.low is not None:
        dose_range = {"low": _quantity(dose.low * factor, unit), **dose_range}
    return {"doseRange": dose_range}, unit


def dosage(dose: Dose, body: Body, content: CardContent) -> dict[str, Any]:
    """One structured Dosage: the verbatim text, timing, route (when the seed states it), dose."""
    out: dict[str, Any] = {"text": labelled(dose)}
    order = dose.order
    if order is None:
        return out
    repeat: dict[str, Any] = {"frequency": order.timing.frequency, "period": order.timing.period}
    if order.timing.period_max is not None:
        repeat["periodMax"] = order.timing.period_max
    repeat["periodUnit"] = order.timing.unit
    out["timing"] = {"repeat": repeat}
    if order.route is not None:
        route = content.routes[order.route]
        out["route"] = {"coding": [{k: route[k] for k in ("system", "code", "display")}]}
    amount, _unit = _dose(order.dose, body)
    out["doseAndRate"] = [amount]
    return out


def medication_request(
    option: Option,
    result: EvaluationResult,
    body: Body,
    ctx: CardContext,
    content: CardContent,
    cite_text: str,
) -> dict[str, Any] | None:
    """A draft order for `option` with the seed's dose for this patient; None without an RxNorm code or a
    structured dose for this patient."""
    doses = [d for d in doses_for(option, result.patient) if d.order is not None]
    if option.rxnorm is None or not doses:
        return None
    dose = doses[0]  # the first regimen the seed lists for this population
    agent = option.order_agent or option.agent
    code = content.rxnorm[option.rxnorm]
    notes = [
        f"Dose as given by the seed ({dose.text}); the prescriber confirms the dose. Sources: {cite_text}",
        f"RxNorm {code.code} ({agent.lower()}, ingredient): verification status {code.status} "
        f"({STATUS_WORDS[code.status]}); confirm the product when signing.",
    ]
    notes += [f"Arithmetic [project-derived]: {line}" for line in arithmetic(dose, body)]
    if dose.order is not None and dose.order.route is None:
        notes.append("The seed states no route for this dose.")
    notes += list(option.unverified)
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "category": [{"coding": [dict(content.medication_category)]}],
        "reportedBoolean": False,
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code.code, "display": agent.lower()}],
            "text": agent,
        },
        **_common(ctx, result.at),
        "reasonCode": [{"text": REASON_TEXT}],
        "dosageInstruction": [dosage(dose, body, content)],
        "note": [{"text": note} for note in notes],
    }


def create_action(description: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"type": "create", "description": description, "resource": resource}


def delete_action(description: str, resource_id: str) -> dict[str, Any]:
    return {"type": "delete", "description": description, "resourceId": resource_id}


def suggestion(
    label: str, actions: list[dict[str, Any]], uuid: str, *, recommended: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {"label": label, "uuid": uuid, "actions": actions}
    if recommended:
        out["isRecommended"] = True
    return out
