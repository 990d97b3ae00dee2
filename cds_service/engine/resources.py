"""Collect FHIR resources from a Bundle, a prefetch dict, a list or a single resource; de-duplicate."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from msgspec import UNSET

from cds_service.engine.fhirutil import parse_datetime
from cds_service.engine.model import DataIssue
from cds_service.engine.typed import TypedObservation, as_dict, typed_meta
from cds_service.errors import InputError

# Bundles inside Bundles (e.g. a searchset of collections) are read, but only this deep: the input comes
# from outside and recursion on it must stay bounded.
MAX_BUNDLE_NESTING = 4
USED_TYPES = frozenset(
    {
        "Patient",
        "Observation",
        "Condition",
        "Procedure",
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
        "Medication",
    }
)


class ResourceSet:
    """Resources by type, after de-duplication, plus the issues met while collecting them."""

    def __init__(self) -> None:
        # Resources are JSON objects, except Observations decoded on the hook fast path (TypedObservation).
        self.by_type: dict[str, list[Any]] = defaultdict(list)
        self.issues: list[DataIssue] = []
        self.seen = 0
        self._by_key: dict[str, Any] = {}

    def add(self, resource: Any, where: str, depth: int = 0) -> None:
        if type(resource) is TypedObservation:  # decoded on the hook fast path (engine.typed)
            self._keep(resource, "Observation")
            return
        if not isinstance(resource, dict):
            self.issues.append(DataIssue(where, "entry is not a JSON object"))
            return
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            self.issues.append(DataIssue(where, "resource has no resourceType"))
            return
        if rtype == "Bundle":
            if depth >= MAX_BUNDLE_NESTING:
                self.issues.append(DataIssue(where, "Bundle nested too deeply: skipped"))
                return
            self._add_bundle(resource, where, depth + 1)
            return
        self._keep(resource, rtype)

    def _keep(self, resource: Any, rtype: str) -> None:
        self.seen += 1
        if rtype not in USED_TYPES:
            return
        rid = resource.id if type(resource) is TypedObservation else resource.get("id")
        if isinstance(rid, str):
            key = f"{rtype}/{rid}"
            previous = self._by_key.get(key)
            if previous is not None:
                self.issues.append(
                    DataIssue(
                        key, "duplicate resource id; the most recent version is used", severity="flagged"
                    )
                )
                if _last_updated(previous) > _last_updated(resource):
                    return
                self.by_type[rtype].remove(previous)
            self._by_key[key] = resource
        self.by_type[rtype].append(resource)

    def _add_bundle(self, bundle: dict[str, Any], where: str, depth: int) -> None:
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            self.issues.append(DataIssue(where, "Bundle.entry is not an array"))
            return
        keep, by_key, observations = self._keep, self._by_key, self.by_type["Observation"]
        kept_inline = 0
        for index, entry in enumerate(entries):
            # Hot path: a plain resource entry needs no location string (only issues name one).
            resource = entry.get("resource") if type(entry) is dict else None
            if type(resource) is TypedObservation:
                key = f"Observation/{resource.id}"
                if resource.id is not UNSET and key not in by_key:  # the usual case, inline (see _keep)
                    by_key[key] = resource
                    observations.append(resource)
                    kept_inline += 1
                else:
                    keep(resource, "Observation")
                continue
            if type(resource) is dict:
                rtype = resource.get("resourceType")
                if type(rtype) is str and rtype != "Bundle":
                    keep(resource, rtype)
                    continue
            if not isinstance(entry, dict) or "resource" not in entry:
                self.issues.append(DataIssue(f"{where}.entry[{index}]", "entry has no resource"))
                continue
            self.add(entry["resource"], f"{where}.entry[{index}].resource", depth)
        self.seen += kept_inline

    def resource(self, reference: str) -> dict[str, Any] | None:
        found = self._by_key.get(reference)
        if type(found) is TypedObservation:
            return as_dict(found)
        return found if isinstance(found, dict) else None


def _last_updated(resource: Any) -> str:
    meta = typed_meta(resource) if type(resource) is TypedObservation else resource.get("meta")
    stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
    parsed = parse_datetime(stamp)
    return parsed.isoformat() if parsed else ""


def collect(data: Any) -> ResourceSet:
    """Accept a Bundle (any type), a resource, a list, or a prefetch-style dict of those."""
    result = ResourceSet()
    if isinstance(data, list):
        for index, item in enumerate(data):
            result.add(item, f"[{index}]")
    elif isinstance(data, dict) and "resourceType" in data:
        result.add(data, "$")
    elif isinstance(data, dict):
        for key, value in data.items():
            if value is None:
                continue  # prefetch null: the client had no data for this key
            if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
                result.issues.append(
                    DataIssue(f"prefetch.{key}", "prefetch failed (OperationOutcome)", severity="flagged")
                )
                continue
            result.add(value, f"prefetch.{key}")
    else:
        raise InputError("input is not a FHIR Bundle, resource, list or prefetch object")
    return result
