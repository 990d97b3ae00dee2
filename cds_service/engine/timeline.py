"""The patient's timeline: IEC therapy and infusion day, lymphodepletion, demographics.

Infusion candidates are read once (engine.record); `therapy_at` and `patient_at` give the state at an
evaluation instant from them, so an evaluation at a past instant sees only what was on record then.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.events import excluded, medication_concept, product_of
from cds_service.engine.fhirutil import codings, parse_datetime, period_start, resource_key
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DrugEvent, LabValue, PatientInfo, ProcedureEvent, Therapy
from cds_service.engine.resources import ResourceSet

PEDIATRIC_AGE_YEARS = 18  # adult vs pediatric dosing tables of the review (section 5)
LYMPHODEPLETION_LOOKBACK = timedelta(days=14)
_MED_TIMES = {
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod"),
    "MedicationRequest": ("authoredOn",),
}


@dataclass(frozen=True, slots=True, order=True)
class Infusion:
    """A recorded immune effector cell infusion (ordered by time)."""

    time: datetime
    product_id: str
    resource_id: str
    match: str  # how the product was recognised (rxnorm, ndc, name, procedure)


def infusions(kb: Knowledge, resources: ResourceSet) -> list[Infusion]:
    """Every CAR-T infusion on record (administration, statement, request or procedure), sorted by time."""
    found: list[Infusion] = []
    for rtype, fields in _MED_TIMES.items():
        for resource in resources.by_type.get(rtype, []):
            if excluded(resource):
                continue
            hit = product_of(kb, medication_concept(resources, resource))
            time = period_start(resource, *fields)
            if hit is not None and time is not None:
                found.append(Infusion(time, hit[0], resource_key(resource), hit[1]))
    for resource in resources.by_type.get("Procedure", []):
        if excluded(resource):
            continue
        time = period_start(resource, "performedDateTime", "performedPeriod")
        procedure = _procedure_product(kb, resource)
        if procedure is not None and time is not None:
            found.append(Infusion(time, procedure[0], resource_key(resource), procedure[1]))
    return sorted(found)


def therapy_at(
    kb: Knowledge,
    candidates: list[Infusion],
    drugs: list[DrugEvent],
    procedures: list[ProcedureEvent],
    at: datetime,
) -> Therapy:
    """The most recent infusion at or before `at`, with its lymphodepletion."""
    done = [c for c in candidates if c.time <= at]
    if not done:
        return Therapy(found=False)
    latest = max(done)
    product = kb.products[latest.product_id]
    therapy = Therapy(
        found=True,
        product_id=product.id,
        product=product.display,
        target=product.target,
        infusion_time=latest.time,
        day_post_infusion=(at.date() - latest.time.date()).days,
        resource_id=latest.resource_id,
        match=latest.match,
    )
    return with_lymphodepletion(therapy, drugs, procedures)


def _procedure_product(kb: Knowledge, resource: dict[str, Any]) -> tuple[str, str] | None:
    concept = resource.get("code")
    named = product_of(kb, concept)
    for system, code, _ in codings(concept):
        if (system, code) in kb.therapy_procedures:
            product = kb.therapy_procedures[(system, code)]
            if product is not None:
                return product, "procedure"
            return (named[0] if named else "investigational-car-t"), "procedure"
    return (named[0], "procedure-name") if named else None


def with_lymphodepletion(
    therapy: Therapy, drugs: list[DrugEvent], procedures: list[ProcedureEvent]
) -> Therapy:
    """Attach the earliest lymphodepletion within 14 days before infusion."""
    if therapy.infusion_time is None:
        return therapy
    start = therapy.infusion_time - LYMPHODEPLETION_LOOKBACK
    times = [
        d.time for d in drugs if d.role == "lymphodepletion" and start <= d.time <= therapy.infusion_time
    ]
    times += [
        p.time for p in procedures if p.kind == "lymphodepletion" and start <= p.time <= therapy.infusion_time
    ]
    if not times:
        return therapy
    return replace(therapy, lymphodepletion_time=min(times))


def patient_at(patients: list[dict[str, Any]], labs: dict[str, list[LabValue]], at: datetime) -> PatientInfo:
    patient = patients[-1] if patients else {}
    birth = parse_datetime(patient.get("birthDate"))
    age_days = (at - birth).days if birth is not None and birth <= at else None
    deceased_time = parse_datetime(patient.get("deceasedDateTime"))
    deceased: bool | None = None
    if deceased_time is not None:
        deceased = deceased_time <= at
    elif isinstance(patient.get("deceasedBoolean"), bool):
        deceased = bool(patient["deceasedBoolean"])
    weights = [w for w in labs.get("body_weight", []) if w.time <= at]
    age_years = round(age_days / 365.25, 2) if age_days is not None else None
    gender = patient.get("gender")
    return PatientInfo(
        id=patient.get("id") if isinstance(patient.get("id"), str) else None,
        age_years=age_years,
        age_days=age_days,
        gender=gender if isinstance(gender, str) else None,
        deceased=deceased,
        deceased_time=deceased_time if deceased else None,
        weight_kg=weights[-1].value if weights else None,
        weight_time=weights[-1].time if weights else None,
        pediatric=(age_years < PEDIATRIC_AGE_YEARS) if age_years is not None else None,
    )
