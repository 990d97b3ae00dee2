"""Reads the patient's record from the FHIR server with the SMART access token.

Uses the service's own :class:`~cds_service.hooks.fhir_client.FhirClient`: a time budget per call and overall,
``Bundle.link[next]`` followed up to a page limit and only on the server's own origin, no redirects (the
token goes nowhere else), and failure reasons free of URLs and tokens.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests

from cds_service.engine.knowledge import Knowledge
from cds_service.hooks.fhir_client import FhirClient, FhirFetchError
from cds_service.smart.errors import SmartError, fhir_unavailable, token_expired
from cds_service.smart.sessions import LaunchContext
from cds_service.smart.settings import SmartSettings

LOINC = "http://loinc.org"
PAGE_SIZE = 500
PICKER_LIMIT = 100
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Engine prefetch keys -> searches; each is `?patient=<id>` plus the extra parameters.
SEARCHES: dict[str, tuple[str, dict[str, str]]] = {
    "conditions": ("Condition", {}),
    "procedures": ("Procedure", {}),
    "medicationAdministrations": ("MedicationAdministration", {}),
}


@dataclass(slots=True)
class PatientRecord:
    """Everything the engine gets, as a prefetch-shaped dict, plus notes on incomplete searches."""

    patient: dict[str, Any]
    data: dict[str, Any]
    incomplete: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PatientChoice:
    """One row of the patient picker."""

    id: str
    name: str
    birth_date: str
    gender: str


def valid_id(value: str | None) -> bool:
    return value is not None and _FHIR_ID.fullmatch(value) is not None


def _client(http: requests.Session, context: LaunchContext, settings: SmartSettings) -> FhirClient:
    return FhirClient(
        http,
        context.iss,
        context.access_token,
        timeout_s=settings.http_timeout_s,
        max_pages=settings.fhir_max_pages,
    )


def _fail(exc: FhirFetchError) -> SmartError:
    if exc.reason == "HTTP 401":  # the FHIR server no longer accepts the token
        return token_expired()
    if exc.reason == "HTTP 403":
        return SmartError(
            403,
            "forbidden",
            "Access to this record was refused",
            "The FHIR server refused access (HTTP 403).",
        )
    return fhir_unavailable(exc.reason)


def observation_codes(kb: Knowledge) -> str:
    """Every LOINC code of mappings/analytes.yaml, as one comma-separated token search value."""
    return ",".join(f"{LOINC}|{code}" for code in sorted(kb.loinc_index))


def fetch_record(
    http: requests.Session, context: LaunchContext, settings: SmartSettings, kb: Knowledge
) -> PatientRecord:
    """Patient, Observations (all mapped LOINC codes), Conditions, Procedures, MedicationAdministrations."""
    if not valid_id(context.patient):
        raise SmartError(
            400, "no-patient", "No patient selected", "The session has no valid patient context."
        )
    patient_id = str(context.patient)
    client = _client(http, context, settings)
    deadline = time.monotonic() + settings.fetch_budget_s
    try:
        patient = client.get(f"Patient/{quote(patient_id)}", deadline).value
        if patient is None or patient.get("resourceType") != "Patient":
            raise SmartError(
                404, "patient-not-found", "Patient not found", "The FHIR server has no such patient."
            )
        searches = dict(SEARCHES)
        searches["observations"] = ("Observation", {"code": observation_codes(kb)})
        record = PatientRecord(patient=patient, data={"patient": patient})
        for key, (rtype, params) in searches.items():
            query = urlencode({"patient": patient_id, **params, "_count": str(PAGE_SIZE)})
            outcome = client.get(f"{rtype}?{query}", deadline)
            record.data[key] = outcome.value
            if not outcome.complete:
                record.incomplete.append(rtype)
    except FhirFetchError as exc:
        raise _fail(exc) from None
    return record


def search_patients(
    http: requests.Session, context: LaunchContext, settings: SmartSettings, name: str = ""
) -> list[PatientChoice]:
    """Patients for the picker (optionally filtered by name), sorted by name."""
    params = {"_count": str(PICKER_LIMIT)}
    if name.strip():
        params["name"] = name.strip()
    client = _client(http, context, settings)
    try:
        outcome = client.get(f"Patient?{urlencode(params)}", time.monotonic() + settings.fetch_budget_s)
    except FhirFetchError as exc:
        raise _fail(exc) from None
    entries = (outcome.value or {}).get("entry", [])
    choices = [_choice(e.get("resource")) for e in entries if isinstance(e, dict)]
    return sorted((c for c in choices if c is not None), key=lambda c: (c.name.lower(), c.id))[:PICKER_LIMIT]


def read_patient(
    http: requests.Session, context: LaunchContext, settings: SmartSettings, patient_id: str
) -> bool:
    """Does the patient exist (and may this token read it)?"""
    if not valid_id(patient_id):
        return False
    try:
        outcome = _client(http, context, settings).get(
            f"Patient/{quote(patient_id)}", time.monotonic() + settings.fetch_budget_s
        )
    except FhirFetchError as exc:
        raise _fail(exc) from None
    return outcome.value is not None and outcome.value.get("resourceType") == "Patient"


def _choice(resource: Any) -> PatientChoice | None:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        return None
    if not valid_id(resource.get("id")):
        return None
    return PatientChoice(
        id=str(resource["id"]),
        name=display_name(resource),
        birth_date=str(resource.get("birthDate", "")),
        gender=str(resource.get("gender", "")),
    )


def display_name(patient: dict[str, Any]) -> str:
    """'Family, Given' from the official (else first) HumanName; the id when there is no name."""
    names = [n for n in patient.get("name", []) if isinstance(n, dict)]
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if chosen is None:
        return f"Patient {patient.get('id', '')}".strip()
    if isinstance(chosen.get("text"), str) and not chosen.get("family"):
        return str(chosen["text"])
    given = " ".join(g for g in chosen.get("given", []) if isinstance(g, str))
    family = chosen.get("family") if isinstance(chosen.get("family"), str) else ""
    return ", ".join(part for part in (family, given) if part) or f"Patient {patient.get('id', '')}"
