"""The one registry of CDS services: discovery output and request routing are both generated from it.

Prefetch contract (documented for integrators in docs/cds-hooks.md):

* Templates use only the CDS Hooks 2.0 (STU2) query subset and tokens. `{{today()}}` is 3.0-ballot content
  that STU2 clients do not expand, so the Observation template bounds the result with `_sort=-date` and
  `_count` instead of a date window. The service's own fallback query adds `date=ge<now - lookback>`
  (CDS_PREFETCH_LOOKBACK_DAYS) because it can compute dates.
* The Observation code list is generated from mappings/analytes.yaml at start (codes live in data): every
  LOINC code of every analyte, as `http://loinc.org|<code>`. Analytes recognised only by text (sCD25) cannot
  be searched by code and come only from prefetch.
* Required keys (missing and not fetchable -> 412): `patient` and `observations`, without which no instrument
  can be evaluated. The other keys are optional: a gap is passed to the card renderer as a data gap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cds_service.engine.knowledge import Knowledge
from cds_service.hooks.prefetch_tokens import check_template

LOINC = "http://loinc.org"
OBSERVATION_PAGE_SIZE = 1000  # newest first; a non-paging client still sends the most recent 1000


@dataclass(frozen=True, slots=True)
class PrefetchTemplate:
    """One prefetch key: its template, whether the service needs it, and its fallback date parameter."""

    key: str
    template: str
    required: bool = False
    fallback_date_param: str | None = None  # search parameter the fallback bounds by the lookback window


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """One CDS service as advertised in discovery."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchTemplate, ...]
    usage_requirements: str | None = None

    @property
    def required_keys(self) -> frozenset[str]:
        return frozenset(p.key for p in self.prefetch if p.required)

    def template(self, key: str) -> PrefetchTemplate:
        return next(p for p in self.prefetch if p.key == key)

    def to_discovery(self) -> dict[str, Any]:
        """The discovery entry (STU2 field names; optional fields omitted when empty)."""
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {p.key: p.template for p in self.prefetch},
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


@dataclass(frozen=True, slots=True)
class ServiceRegistry:
    """All services, looked up by (id, hook). Several hooks may share an id (STU2 allows it)."""

    services: tuple[ServiceDefinition, ...]

    def ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.services)

    def hooks_for(self, service_id: str) -> tuple[str, ...]:
        return tuple(s.hook for s in self.services if s.id == service_id)

    def find(self, service_id: str, hook: str) -> ServiceDefinition | None:
        return next((s for s in self.services if s.id == service_id and s.hook == hook), None)

    def discovery(self) -> dict[str, Any]:
        return {"services": [s.to_discovery() for s in self.services]}


def observation_codes(kb: Knowledge) -> list[str]:
    """Every LOINC code of mappings/analytes.yaml as `system|code`, in file order, without duplicates."""
    codes = (str(c["code"]) for spec in kb.analytes.values() for c in spec["codes"])
    return [f"{LOINC}|{code}" for code in dict.fromkeys(codes)]


def prefetch_templates(kb: Knowledge) -> tuple[PrefetchTemplate, ...]:
    """What the engine reads: the patient, coded Observations, Conditions, Procedures and medications."""
    patient = "{{context.patientId}}"
    codes = ",".join(observation_codes(kb))
    return (
        PrefetchTemplate("patient", f"Patient/{patient}", required=True),
        PrefetchTemplate(
            "observations",
            f"Observation?patient={patient}&code={codes}&_sort=-date&_count={OBSERVATION_PAGE_SIZE}",
            required=True,
            fallback_date_param="date",
        ),
        PrefetchTemplate("conditions", f"Condition?patient={patient}"),
        PrefetchTemplate("procedures", f"Procedure?patient={patient}"),
        PrefetchTemplate("medicationAdministrations", f"MedicationAdministration?patient={patient}"),
        PrefetchTemplate("medicationRequests", f"MedicationRequest?patient={patient}"),
    )


_USAGE = (
    "Needs the patient's LOINC-coded labs and vitals, Conditions (CRS, organ findings), Procedures and "
    "medication records. Supply the prefetch keys, or fhirServer with fhirAuthorization (read scopes on "
    "Patient, Observation, Condition, Procedure, MedicationAdministration, MedicationRequest)."
)
_SPECS: tuple[tuple[str, str, str, str], ...] = (
    (
        "iec-hs-screening",
        "patient-view",
        "IEC-HS screening after CAR-T therapy",
        "Screens patients who received immune effector cell (CAR-T) therapy for IEC-associated "
        "hemophagocytic lymphohistiocytosis-like syndrome (IEC-HS, ASTCT 2023): status, grade, HScore, "
        "HLH-2004 and the labs still missing.",
    ),
    (
        "iec-hs-order-select",
        "order-select",
        "IEC-HS drug-order check (order select)",
        "When tocilizumab or siltuximab is selected for a patient meeting or approaching IEC-HS without "
        "active CRS, warns and suggests anakinra; for IEC-HS-directed drugs shows the current grade and "
        "missing monitoring labs.",
    ),
    (
        "iec-hs-order-sign",
        "order-sign",
        "IEC-HS drug-order check (order sign)",
        "Same checks as the order-select service, run on the complete orders at signing.",
    ),
)


def build_registry(kb: Knowledge, specs: Iterable[tuple[str, str, str, str]] = _SPECS) -> ServiceRegistry:
    """Build the registry from the knowledge base; every template is checked against the token grammar."""
    templates = prefetch_templates(kb)
    for template in templates:
        check_template(template.template)
    services = tuple(
        ServiceDefinition(sid, hook, title, description, templates, _USAGE)
        for sid, hook, title, description in specs
    )
    return ServiceRegistry(services)
