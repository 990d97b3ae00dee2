"""Which patient a Bulk Data resource belongs to, from its patient reference."""

from __future__ import annotations

from typing import Any

PATIENT_ELEMENTS = ("subject", "patient")
URN_UUID = "urn:uuid:"


def patient_id(reference: str) -> str | None:
    """The Patient id of a reference, or None when it points elsewhere.

    Accepts ``Patient/x``, ``Patient/x/_history/1``, absolute ``https://host/fhir/Patient/x[/_history/n]``,
    ``urn:uuid:x`` (the id is the uuid: a Bulk export has no fullUrl to resolve it against) and a bare ``x``.
    """
    reference = reference.strip()
    if not reference:
        return None
    if reference.startswith(URN_UUID):
        return reference[len(URN_UUID) :] or None
    parts = reference.split("/")
    if len(parts) == 1:
        return parts[0]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if parts[-2] != "Patient" or not parts[-1]:
        return None
    return parts[-1]


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient a resource belongs to: a Patient's own id, else its subject or patient reference."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for element in PATIENT_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str):
                return patient_id(reference)
    return None
