"""Tiny builders of FHIR R4 resources for unit tests (codes from mappings/, values chosen per test)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # infusion instant used by the tests
FLOWSHEET = "https://fixtures.example.org/fhir/CodeSystem/flowsheet-row"  # the example site rows
_ids = itertools.count(1)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(n: float, hours: float = 0) -> datetime:
    return T0 + timedelta(days=n, hours=hours)


def patient(
    pid: str = "p1", birth: str = "1970-05-01", gender: str = "female", **extra: Any
) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": gender, **extra}


def obs(
    code: str,
    value: float,
    unit: str,
    when: datetime,
    *,
    low: float | None = None,
    high: float | None = None,
    status: str = "final",
    comparator: str | None = None,
    rid: str | None = None,
    system: str | None = UCUM,
) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": unit, "code": unit}
    if system:
        quantity["system"] = system
    if comparator:
        quantity["comparator"] = comparator
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid or f"o{next(_ids)}",
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": iso(when),
        "valueQuantity": quantity,
    }
    if low is not None or high is not None:
        rng: dict[str, Any] = {}
        if low is not None:
            rng["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
        if high is not None:
            rng["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        resource["referenceRange"] = [rng]
    return resource


def car_t(
    when: datetime = T0, rxnorm: str = "1987402", text: str = "axicabtagene ciloleucel"
) -> dict[str, Any]:
    return medication(rxnorm, text, when)


def medication(
    rxnorm: str | None, text: str, when: datetime, rtype: str = "MedicationAdministration"
) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": text}]
    resource: dict[str, Any] = {
        "resourceType": rtype,
        "id": f"m{next(_ids)}",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": concept,
    }
    if rtype == "MedicationRequest":
        resource.update(status="active", intent="order", authoredOn=iso(when))
    else:
        resource["effectiveDateTime"] = iso(when)
    return resource


def condition(
    system: str,
    code: str,
    onset: datetime,
    *,
    abatement: datetime | None = None,
    verification: str = "confirmed",
    text: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c{next(_ids)}",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}], **({"text": text} if text else {})},
        "onsetDateTime": iso(onset),
        "clinicalStatus": {"coding": [{"code": "resolved" if abatement else "active"}]},
        "verificationStatus": {"coding": [{"code": verification}]},
    }
    if abatement is not None:
        resource["abatementDateTime"] = iso(abatement)
    return resource


def crs(grade: int, onset: datetime, abatement: datetime | None = None) -> dict[str, Any]:
    return condition(ICD10, f"D89.83{grade}", onset, abatement=abatement)


def procedure(
    text: str, when: datetime, system: str | None = None, code: str | None = None
) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if system and code:
        concept["coding"] = [{"system": system, "code": code}]
    return {
        "resourceType": "Procedure",
        "id": f"pr{next(_ids)}",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": concept,
        "performedDateTime": iso(when),
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def infusion(text: str, start: datetime, end: datetime | None, rxnorm: str | None = None) -> dict[str, Any]:
    """A drug infusion charted as a period (a vasopressor on the MAR); no end while it runs."""
    resource = medication(rxnorm, text, start)
    del resource["effectiveDateTime"]
    resource["effectivePeriod"] = {"start": iso(start), **({"end": iso(end)} if end else {})}
    if end is None:
        resource["status"] = "in-progress"
    return resource


def device_row(text: str, when: datetime, snomed: str | None = None) -> dict[str, Any]:
    """A flowsheet row naming the oxygen delivery device (LOINC 107117-4, mappings/oxygen_support.yaml)."""
    concept: dict[str, Any] = {"text": text}
    if snomed:
        concept["coding"] = [{"system": "http://snomed.info/sct", "code": snomed, "display": text}]
    return {
        "resourceType": "Observation",
        "id": f"o{next(_ids)}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "107117-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": iso(when),
        "valueCodeableConcept": concept,
    }


def documented_grade(kind: str, value: int, when: datetime) -> dict[str, Any]:
    """A documented grade under the example site flowsheet codes (mappings/site_flowsheets.yaml)."""
    codes = {"crs_grade": "crs-grade-astct", "icans_grade": "icans-grade-astct", "ice_score": "ice-score"}
    return {
        "resourceType": "Observation",
        "id": f"o{next(_ids)}",
        "status": "final",
        "code": {"coding": [{"system": FLOWSHEET, "code": codes[kind]}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": iso(when),
        "valueInteger": value,
    }
