"""Draft FHIR R4 resources for card suggestions: MedicationRequests for treatment options, ServiceRequests
for labs not on record, and the CDS Hooks suggestion/action wrappers around them.

Drafts are proposals (status `draft`, intent `proposal`). A MedicationRequest carries the review's dose range
as dosage text only (never a structured single dose) and an RxNorm coding only when mappings/medications.yaml
marks that code verified: an unverified code must not reach a one-click order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cds_service.cards.content import CardContent, Dose, Option
from cds_service.cards.dosing import Body, dose_line
from cds_service.engine.catalog import LOINC, RXNORM
from cds_service.engine.instruments.registry import title_of
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult

DAILY = timedelta(hours=24)  # Hines Table 4 "daily" monitoring, operationalised as 24 h [D]
REASON_TEXT = "Immune effector cell-associated HLH-like syndrome (IEC-HS)"


@dataclass(frozen=True, slots=True)
class LabGap:
    analyte: str
    display: str
    loinc: str
    loinc_display: str
    reason: str


def _needed_by(kb: Knowledge, names: Iterable[str]) -> str:
    return ", ".join(title_of(kb, name) for name in names)


def _loinc_display(kb: Knowledge, analyte: str, code: str) -> str:
    codes = kb.analytes[analyte]["codes"]
    return str(next((c["display"] for c in codes if c["code"] == code), kb.display(analyte)))


def labs_to_order(
    result: EvaluationResult, content: CardContent, kb: Knowledge, *, monitoring: bool
) -> tuple[LabGap, ...]:
    """Orderable labs that criteria need and the window lacks; with `monitoring`, also the Table 4 daily
    labs with no result in the last 24 h. In cards/templates.yaml order, each once."""
    latest = {lab.analyte: lab for lab in result.latest}
    missing = {m.analyte: m for m in result.missing_data}
    gaps: list[LabGap] = []
    for analyte, daily in content.orderable_labs.items():
        last = latest.get(analyte)
        if analyte in missing and (last is None or last.time < result.window_start):
            reason = f"not in the evaluation window; needed by {_needed_by(kb, missing[analyte].needed_by)}"
        elif monitoring and daily and (last is None or result.at - last.time > DAILY):
            reason = "daily monitoring (Hines 2023 Table 4): no result in the last 24 h"
        else:
            continue
        code = (missing[analyte].loinc if analyte in missing else None) or kb.first_loinc(analyte)
        if code is not None:
            gaps.append(LabGap(analyte, kb.display(analyte), code, _loinc_display(kb, analyte, code), reason))
    return tuple(gaps)


def service_request(gap: LabGap, patient_id: str, content: CardContent) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "category": [{"coding": [dict(content.lab_category)]}],
        "code": {
            "coding": [{"system": LOINC, "code": gap.loinc, "display": gap.loinc_display}],
            "text": gap.display,
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": f"IEC-HS screening: {gap.reason}"}],
    }


def medication_request(
    option: Option,
    doses: tuple[Dose, ...],
    body: Body,
    patient_id: str,
    content: CardContent,
    cite_text: Callable[[Iterable[str]], str],
) -> dict[str, Any]:
    """A draft order for `option` with the review's dose range(s) for this patient as text."""
    agent = option.order_agent or option.agent
    concept: dict[str, Any] = {"text": agent}
    if option.rxnorm is not None and option.rxnorm in content.verified_rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": option.rxnorm}]
    notes = [
        "Dose range as given by the review; the prescriber chooses the dose. "
        f"Sources: {cite_text(option.citations)}"
    ]
    notes.extend(option.unverified)
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": REASON_TEXT}],
        "dosageInstruction": [{"text": dose_line(dose, body)} for dose in doses],
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
