"""Conditions -> findings and CRS records; medication resources -> drug events; Procedures -> events."""

from __future__ import annotations

from typing import Any, Literal

from cds_service.engine.catalog import NDC, RXNORM
from cds_service.engine.fhirutil import (
    codings,
    concept_label,
    concept_text,
    period_end,
    period_start,
    reference_id,
    resource_key,
)
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DataIssue, DrugEvent, ProcedureEvent
from cds_service.engine.resources import ResourceSet

EXCLUDED = frozenset({"entered-in-error", "not-done", "cancelled", "stopped-before-start"})


def excluded(resource: dict[str, Any]) -> bool:
    """Status in EXCLUDED, or a status that is not a code at all (malformed input is never trusted)."""
    status = resource.get("status")
    return (status is not None and type(status) is not str) or status in EXCLUDED


MED_TIME_FIELDS = {
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
}
MED_SOURCE: dict[str, Literal["administration", "request", "statement"]] = {
    "MedicationAdministration": "administration",
    "MedicationRequest": "request",
    "MedicationStatement": "statement",
}


def _code_of(concept: Any, system: str) -> str | None:
    return next((code for sys, code, _ in codings(concept) if sys == system), None)


def verification(resource: dict[str, Any]) -> str:
    return next((code for _, code, _ in codings(resource.get("verificationStatus"))), "")


def clinical_status(resource: dict[str, Any]) -> str:
    return next((code for _, code, _ in codings(resource.get("clinicalStatus"))), "")


def finding_names(kb: Knowledge, concept: Any) -> tuple[str, ...]:
    names: list[str] = []
    for system, code, _ in codings(concept):
        names.extend(kb.finding_codes.get((system, code), ()))
    if not names:
        text = concept_text(concept)
        if text:
            # Most specific first: "hemophagocytosis in bone marrow" must not also count as "other".
            for name, matcher in kb.finding_text.items():
                if matcher.matches(text):
                    names.append(name)
            if {"hemophagocytosis_marrow", "hemophagocytosis_tissue"} & set(names):
                names = [n for n in names if n != "hemophagocytosis_other"]
    return tuple(dict.fromkeys(names))


def crs_grade(kb: Knowledge, concept: Any) -> tuple[bool, int | None]:
    """(is CRS, grade from the ICD-10-CM D89.83x digit)."""
    for system, code, _ in codings(concept):
        if system == kb.crs_system and code in kb.crs_codes:
            return True, kb.crs_codes[code]
    return (kb.crs_text.matches(concept_text(concept)), None)


def drug_class(kb: Knowledge, concept: Any) -> str | None:
    """The drug class of a medication concept (RxNorm code, else a reviewed name in its text)."""
    return kb.memoized("drug_class", concept, _drug_class)


def _drug_class(kb: Knowledge, concept: Any) -> str | None:
    code = _code_of(concept, RXNORM)
    if code is not None and code in kb.drug_rxnorm:
        return kb.drug_rxnorm[code]
    text = concept_text(concept)
    if not text:
        return None
    # The longest reviewed name found wins: "norepinephrine" contains "epinephrine".
    found = [(len(name), cls) for name, cls in kb.drug_names if name in text]
    return max(found)[1] if found else None


def medication_concept(resources: ResourceSet, resource: dict[str, Any]) -> Any:
    """medicationCodeableConcept, or the code of the referenced (or contained) Medication, or else the
    reference's display as text: EHRs often reference a Medication the prefetch did not include, and the
    display ("anakinra (KINERET) 100 mg/0.67 mL syringe") is what their own screens show."""
    concept = resource.get("medicationCodeableConcept")
    if concept is not None:
        return concept
    reference = resource.get("medicationReference")
    ref = reference_id(reference)
    target: Any = None
    if ref is not None and ref.startswith("#"):
        contained = resource.get("contained")
        for item in contained if isinstance(contained, list) else []:
            if isinstance(item, dict) and f"#{item.get('id')}" == ref:
                target = item
    elif ref is not None:
        target = resources.resource(_type_and_id(ref))
    if isinstance(target, dict) and target.get("code") is not None:
        return target["code"]
    display = reference.get("display") if isinstance(reference, dict) else None
    return {"text": display} if isinstance(display, str) and display.strip() else None


def _type_and_id(ref: str) -> str:
    """`Medication/<id>` from a relative or absolute reference (a version suffix dropped)."""
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def drug_events(kb: Knowledge, resources: ResourceSet, issues: list[DataIssue]) -> list[DrugEvent]:
    """Every recognised drug given, ordered or stated, at any time, sorted by start (the evaluation instant
    cuts them later: engine.record). An administration with an effectivePeriod is an infusion: its end is
    kept (None while it runs)."""
    events: list[DrugEvent] = []
    for rtype, fields in MED_TIME_FIELDS.items():
        for resource in resources.by_type.get(rtype, []):
            status, intent = resource.get("status"), resource.get("intent")
            if any(value is not None and type(value) is not str for value in (status, intent)):
                issues.append(DataIssue(resource_key(resource), "status or intent is not a code: excluded"))
                continue
            if status in EXCLUDED:
                continue
            if rtype == "MedicationRequest" and intent in {"proposal", "plan"}:
                continue
            concept = medication_concept(resources, resource)
            cls = drug_class(kb, concept)
            if cls is None:
                continue
            time = period_start(resource, *fields)
            if time is None:
                issues.append(DataIssue(resource_key(resource), "medication without a usable time: excluded"))
                continue
            period = isinstance(resource.get("effectivePeriod"), dict) and "effectiveDateTime" not in resource
            events.append(
                DrugEvent(
                    drug_class=cls,
                    role=kb.drug_roles[cls],
                    time=time,
                    resource_id=resource_key(resource),
                    source=MED_SOURCE[rtype],
                    text=concept_label(concept),
                    end=period_end(resource, "effectivePeriod") if period else None,
                    period=period,
                    status=status,
                )
            )
    events.sort(key=lambda e: e.time)
    return events


def procedure_kind(kb: Knowledge, concept: Any) -> str | None:
    for system, code, _ in codings(concept):
        kind = kb.procedure_codes.get((system, code))
        if kind is not None:
            return kind
    text = concept_text(concept)
    if text:
        return next((kind for kind, matcher in kb.procedure_text.items() if matcher.matches(text)), None)
    return None


def procedure_events(kb: Knowledge, procedures: list[dict[str, Any]]) -> list[ProcedureEvent]:
    """Every recognised procedure at any time, sorted by start; a performedPeriod keeps its end."""
    events: list[ProcedureEvent] = []
    for resource in procedures:
        if excluded(resource):
            continue
        kind = procedure_kind(kb, resource.get("code"))
        time = period_start(resource, "performedDateTime", "performedPeriod")
        if kind is None or time is None:
            continue
        period = isinstance(resource.get("performedPeriod"), dict) and "performedDateTime" not in resource
        events.append(
            ProcedureEvent(
                kind,
                time,
                resource_key(resource),
                concept_label(resource.get("code")),
                end=period_end(resource, "performedPeriod") if period else None,
                period=period,
            )
        )
    events.sort(key=lambda e: e.time)
    return events


def product_of(kb: Knowledge, concept: Any) -> tuple[str, str] | None:
    """(product id, how it matched) for a CAR-T product concept."""
    return kb.memoized("product", concept, _product_of)


def _product_of(kb: Knowledge, concept: Any) -> tuple[str, str] | None:
    code = _code_of(concept, RXNORM)
    if code is not None and code in kb.product_rxnorm:
        return kb.product_rxnorm[code], "rxnorm"
    ndc = _code_of(concept, NDC)
    if ndc is not None:
        for prefix, product in kb.product_ndc:
            if ndc.startswith(prefix):
                return product, "ndc"
    text = concept_text(concept)
    if text:
        for name, product in kb.product_names:
            if name in text:
                return product, "name"
    return None
