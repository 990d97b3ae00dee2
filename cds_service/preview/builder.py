"""Build a CDS Hooks request from a FHIR Bundle, as an EHR would send it with every prefetch key filled.

The resources are grouped by the service's own prefetch templates (cds_service.hooks.services): a read
template (``Patient/{{context.patientId}}``) gets the one resource of that type, a search template
(``Observation?...``) gets a searchset Bundle of every resource of that type. The search parameters are not
applied (the preview sends the whole Bundle, so scenarios evaluate exactly as `cds-service evaluate` does).
For order hooks, ``draftOrders`` holds one draft MedicationRequest for the chosen drug.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.engine.knowledge import Knowledge
from cds_service.errors import InvalidRequest
from cds_service.hooks.services import PrefetchTemplate, ServiceDefinition, ServiceRegistry

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PREVIEW_USER = "Practitioner/preview-user"
DRAFT_ID = "preview-draft-1"
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ROLE_LABELS = {"il6_directed": "IL-6 directed", "iec_hs_directed": "IEC-HS directed"}


@dataclass(frozen=True, slots=True)
class DraftDrug:
    """A drug the preview can put in draftOrders: its drug class id, label, name and RxNorm code."""

    id: str
    label: str
    name: str
    rxnorm: str | None


def draft_drugs(kb: Knowledge) -> tuple[DraftDrug, ...]:
    """IL-6 and IEC-HS directed drug classes of mappings/medications.yaml (IL-6 first: they warn)."""
    drugs: list[DraftDrug] = []
    for role in _ROLE_LABELS:
        for drug_class, drug_role in kb.drug_roles.items():
            if drug_role != role:
                continue
            name = next((n for n, c in kb.drug_names if c == drug_class), drug_class)
            code = next((code for code, c in kb.drug_rxnorm.items() if c == drug_class), None)
            drugs.append(DraftDrug(drug_class, f"{name.capitalize()} ({_ROLE_LABELS[role]})", name, code))
    return tuple(drugs)


def service_for_hook(registry: ServiceRegistry, hook: str) -> ServiceDefinition:
    """The (first) service registered for `hook`."""
    service = next((s for s in registry.services if s.hook == hook), None)
    if service is None:
        hooks = ", ".join(sorted({s.hook for s in registry.services}))
        raise InvalidRequest(f"hook: expected one of {hooks}", expression="hook")
    return service


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries (entries without a typed resource are skipped)."""
    if bundle.get("resourceType") != "Bundle" or not isinstance(bundle.get("entry"), list):
        raise InvalidRequest("bundle: expected a FHIR Bundle with an entry array", expression="bundle")
    resources = [e.get("resource") for e in bundle["entry"] if isinstance(e, dict)]
    return [r for r in resources if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]


def build_hook_request(
    service: ServiceDefinition, resources: list[dict[str, Any]], drug: DraftDrug | None, today: date
) -> dict[str, Any]:
    """A complete hook request for `service` with every prefetch key filled from `resources`; a draft
    order is authored on `today` (the evaluation instant's date)."""
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if len(patients) != 1 or not isinstance(patients[0].get("id"), str):
        raise InvalidRequest(
            f"bundle: expected exactly one Patient with an id, found {len(patients)}", expression="bundle"
        )
    patient_id = patients[0]["id"]
    if not _FHIR_ID.fullmatch(patient_id):
        raise InvalidRequest("bundle: the Patient's id is not a FHIR id", expression="bundle")
    context: dict[str, Any] = {"userId": PREVIEW_USER, "patientId": patient_id}
    if service.hook != "patient-view":
        if drug is None:
            raise InvalidRequest("drug: order hooks need a draft drug", expression="drug")
        context["draftOrders"] = draft_orders(patient_id, drug, today)
        if service.hook == "order-select":
            context["selections"] = [f"MedicationRequest/{DRAFT_ID}"]
    return {
        "hook": service.hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": {t.key: prefetch_value(t, resources) for t in service.prefetch},
    }


def prefetch_value(template: PrefetchTemplate, resources: list[dict[str, Any]]) -> Any:
    """What a client would send for one template: the read resource (or null) or a searchset Bundle."""
    path, is_search, _query = template.template.partition("?")
    resource_type = path.split("/", 1)[0]
    matching = [r for r in resources if r["resourceType"] == resource_type]
    if not is_search:
        return matching[0] if matching else None
    entries = [{"resource": r} for r in matching]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries)}
    if entries:  # FHIR JSON never carries empty arrays
        bundle["entry"] = entries
    return bundle


def draft_orders(patient_id: str, drug: DraftDrug, today: date) -> dict[str, Any]:
    """draftOrders with one draft MedicationRequest for `drug` (RxNorm-coded when the mappings have one)."""
    medication: dict[str, Any] = {"text": drug.name}
    if drug.rxnorm:
        medication["coding"] = [{"system": RXNORM, "code": drug.rxnorm, "display": drug.name}]
    request = {
        "resourceType": "MedicationRequest",
        "id": DRAFT_ID,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": today.isoformat(),
        "medicationCodeableConcept": medication,
    }
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": request}]}
