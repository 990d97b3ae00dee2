"""The patient's timeline: IEC therapy and infusion day, lymphodepletion, CRS episodes, demographics."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from cds_service.engine.events import (
    clinical_status,
    crs_grade,
    excluded,
    medication_concept,
    product_of,
    verification,
)
from cds_service.engine.fhirutil import codings, parse_datetime, period_start, resource_key
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import (
    CrsEpisode,
    DrugEvent,
    LabValue,
    PatientInfo,
    ProcedureEvent,
    Therapy,
)
from cds_service.engine.resources import ResourceSet

PEDIATRIC_AGE_YEARS = 18  # adult vs pediatric dosing tables of the review (section 5)
LYMPHODEPLETION_LOOKBACK = timedelta(days=14)
RESOLVED_STATUSES = frozenset({"resolved", "inactive", "remission"})
_MED_TIMES = {
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod"),
    "MedicationRequest": ("authoredOn",),
}


def find_therapy(kb: Knowledge, resources: ResourceSet, at: datetime) -> Therapy:
    """The most recent CAR-T infusion at or before `at` (administration, statement, request or procedure)."""
    candidates: list[tuple[datetime, str, str, str]] = []
    for rtype, fields in _MED_TIMES.items():
        for resource in resources.by_type.get(rtype, []):
            if excluded(resource):
                continue
            hit = product_of(kb, medication_concept(resources, resource))
            time = period_start(resource, *fields)
            if hit is not None and time is not None and time <= at:
                candidates.append((time, hit[0], resource_key(resource), hit[1]))
    for resource in resources.by_type.get("Procedure", []):
        if excluded(resource):
            continue
        time = period_start(resource, "performedDateTime", "performedPeriod")
        hit = _procedure_product(kb, resource)
        if hit is not None and time is not None and time <= at:
            candidates.append((time, hit[0], resource_key(resource), hit[1]))
    if not candidates:
        return Therapy(found=False)
    time, product_id, key, match = max(candidates)
    product = kb.products[product_id]
    return Therapy(
        found=True,
        product_id=product.id,
        product=product.display,
        target=product.target,
        infusion_time=time,
        day_post_infusion=(at.date() - time.date()).days,
        resource_id=key,
        match=match,
    )


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


def crs_episodes(kb: Knowledge, conditions: list[dict[str, Any]], at: datetime) -> list[CrsEpisode]:
    """CRS Conditions grouped into episodes (overlapping records merge), each with a status at `at`."""
    records: list[tuple[datetime, datetime | None, int | None, str, str]] = []
    for resource in conditions:
        if verification(resource) in {"entered-in-error", "refuted"}:
            continue
        is_crs, grade = crs_grade(kb, resource.get("code"))
        onset = period_start(resource, "onsetDateTime", "onsetPeriod", "recordedDate")
        if not is_crs or onset is None or onset > at:
            continue
        abatement = period_start(resource, "abatementDateTime", "abatementPeriod")
        if abatement is not None and abatement > at:
            abatement = None
        records.append((onset, abatement, grade, clinical_status(resource), resource_key(resource)))
    records.sort(key=lambda r: r[0])
    episodes: list[list[tuple[datetime, datetime | None, int | None, str, str]]] = []
    for record in records:
        if episodes and _overlaps(episodes[-1], record[0]):
            episodes[-1].append(record)
        else:
            episodes.append([record])
    return [_episode(group) for group in episodes]


def _overlaps(group: list[tuple[datetime, datetime | None, int | None, str, str]], onset: datetime) -> bool:
    ends = [r[1] for r in group]
    return any(end is None for end in ends) or onset <= max(e for e in ends if e is not None) + timedelta(
        days=1
    )


def _episode(group: list[tuple[datetime, datetime | None, int | None, str, str]]) -> CrsEpisode:
    grades = [r[2] for r in group if r[2] is not None]
    latest = group[-1]
    all_closed = all(r[1] is not None or r[3] in RESOLVED_STATUSES for r in group)
    abatements = [r[1] for r in group if r[1] is not None]
    status: Literal["active", "resolving", "resolved"]
    if all_closed:
        status = "resolved"
    elif grades and latest[2] is not None and latest[2] < max(grades):
        status = "resolving"
    else:
        status = "active"
    return CrsEpisode(
        onset=group[0][0],
        abatement=max(abatements) if all_closed and abatements else None,
        max_grade=max(grades) if grades else None,
        latest_grade=latest[2],
        status=status,
        resource_ids=tuple(r[4] for r in group),
    )


def patient_info(
    patients: list[dict[str, Any]], labs: dict[str, list[LabValue]], at: datetime
) -> PatientInfo:
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
