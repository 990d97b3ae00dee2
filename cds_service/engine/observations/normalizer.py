"""Observations of one evaluation -> LabValues by analyte, in time order, with the issues found.

Two paths share every rule (values, ranges, lookups): the typed fast path reads the plain shape inline,
the general path reads anything else and reports why a value is excluded or flagged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from msgspec import UNSET

from cds_service.engine.fhirutil import parse_datetime, period_start, resource_key
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DataIssue, LabValue
from cds_service.engine.observations.duplicates import TIME, Duplicates, may_repeat
from cds_service.engine.observations.lookups import lookups_for
from cds_service.engine.observations.panels import mapped_components, typed_panel
from cds_service.engine.observations.values import Admitted, ValueReader
from cds_service.engine.typed import TypedObservation, as_dict

EXCLUDED_STATUSES = frozenset({"entered-in-error", "cancelled"})
FLAGGED_STATUSES = frozenset({"preliminary", "registered", "unknown"})
_NOT_PLAIN_STATUSES = EXCLUDED_STATUSES | FLAGGED_STATUSES
_FROMISO = datetime.fromisoformat


class ObservationNormalizer:
    """Normalizes Observations for one evaluation; collects issues and the fallback-range analytes."""

    def __init__(self, kb: Knowledge) -> None:
        self.kb = kb
        self.issues: list[DataIssue] = []
        self.fallback_analytes: set[str] = set()
        self._lookups = lookups_for(kb)
        # The reader adds to these two collections: they are changed in place, never rebound.
        self._values = ValueReader(self._lookups, self.issues, self.fallback_analytes)

    def normalize(self, observations: list[Any]) -> dict[str, list[LabValue]]:
        issues_before = len(self.issues)
        found: list[LabValue] = []
        self._normalize_each(observations, found)
        labs: dict[str, list[LabValue]] = defaultdict(list)
        for lab in found:
            labs[lab.analyte].append(lab)
        for values in labs.values():
            values.sort(key=TIME)  # stable: equal times keep their input order
            if may_repeat(values):
                # Normalize again, reporting each duplicate where it occurs among the other issues.
                del self.issues[issues_before:]
                return self._normalize_reporting_duplicates(observations)
        return labs

    def _normalize_reporting_duplicates(self, observations: list[Any]) -> dict[str, list[LabValue]]:
        labs: dict[str, list[LabValue]] = defaultdict(list)
        duplicates = Duplicates(self.issues)
        found: list[LabValue] = []
        for resource in observations:
            self._normalize_each((resource,), found)
            for lab in found:  # usually one value
                if duplicates.first(lab):
                    labs[lab.analyte].append(lab)
            found.clear()
        for values in labs.values():
            values.sort(key=TIME)
        return labs

    def _normalize_each(self, observations: Iterable[Any], found: list[LabValue]) -> None:
        """Append the values of each Observation to `found`, in input order.

        The plain shapes, type-checked by the decoder (codes and ranges once per distinct value), are read
        inline (the hot path: thousands per hook): a LOINC-coded numeric value, or a panel of LOINC-coded
        numeric components, with an effectiveDateTime, UCUM units and a status that is neither excluded
        nor flagged. Anything else, and anything not decoded (JSON), takes the general path (`_one`),
        which decides and reports.
        """
        # Names bound once: attribute and global lookups cost per Observation on the hot path.
        one, lookups, reader, value_of = self._one, self._lookups, self._values, self._values.typed
        concepts, concept_of = lookups.concepts, lookups.concept
        append = found.append
        times: dict[str, datetime] = {}  # a panel's results share their time: parse it once
        for observation in observations:
            if type(observation) is not TypedObservation:
                one(observation, found)
                continue
            # `x is UNSET` rather than isinstance (the hot path); UNSET is also falsy.
            code, rid, effective = observation.code, observation.id, observation.effectiveDateTime
            plain = observation.status not in _NOT_PLAIN_STATUSES
            if code is UNSET or rid is UNSET or effective is UNSET or not plain:
                one(observation, found)
                continue
            time = times.get(effective)
            if time is None:
                try:
                    time = _FROMISO(effective)
                except ValueError:
                    one(observation, found)
                    continue
                if time.tzinfo is None:
                    time = time.replace(tzinfo=UTC)
                times[effective] = time
            issued_text, issued = observation.issued, None
            if type(issued_text) is str:
                issued = times.get(issued_text)
                if issued is None:
                    issued = parse_datetime(issued_text)  # lenient: an unreadable issued is unknown
                    if issued is not None:
                        times[issued_text] = issued
            key = f"Observation/{rid}"
            if observation.component:
                if not typed_panel(lookups, reader, observation, code, key, time, issued, found):
                    one(observation, found)
                continue
            # Lookups.concept, with its cache lookup inline (the hot path)
            loinc = (concepts.get(bytes(code)) or concept_of(code)).first_loinc
            quantity, ranges = observation.valueQuantity, observation.referenceRange
            lab = None if loinc is None else value_of(key, loinc, quantity, ranges, time, issued)
            if lab is None:
                one(observation, found)
            else:
                append(lab)

    def _one(self, resource: Any, found: list[LabValue]) -> None:
        """The general (lenient) path: any JSON Observation, or a typed one that is not the plain shape."""
        if type(resource) is TypedObservation:
            resource = as_dict(resource)
        lookups = self._lookups
        mapped = lookups.analyte(resource.get("code"))
        components = resource.get("component")
        parts = mapped_components(lookups, components) if type(components) is list else ()
        if mapped is None and not parts:
            return
        rid = resource.get("id")
        key = f"Observation/{rid}" if type(rid) is str else resource_key(resource)
        admitted = self._admit(resource, key)
        if admitted is None:
            return
        read = self._values.general
        if mapped is not None:
            lab = read(key, "", resource, mapped, admitted)
            if lab is not None:
                found.append(lab)
        for index, component, hit in parts:
            path = f"component[{index}]."
            lab = read(f"{key}#{path[:-1]}", path, component, hit, admitted)
            if lab is not None:
                found.append(lab)

    def _admit(self, resource: dict[str, Any], key: str) -> Admitted | None:
        """(time, preliminary, issued) of a mapped Observation; None, with the issue reported, when its status
        excludes it or it has no usable time."""
        status = resource.get("status")
        if status is not None and type(status) is not str:  # a list or object is not a code (unhashable)
            self.issues.append(DataIssue(key, "status is not a code: excluded", path="status"))
            return None
        if status in EXCLUDED_STATUSES:
            self.issues.append(DataIssue(key, f"status '{status}': excluded"))
            return None
        effective = resource.get("effectiveDateTime")
        time = parse_datetime(effective) if type(effective) is str else None
        if time is None:
            names = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued")
            time = period_start(resource, *names)
        if time is None:
            problem = "no usable effective time or issued: excluded"
            self.issues.append(DataIssue(key, problem, path="effective[x]"))
            return None
        preliminary = status in FLAGGED_STATUSES
        if preliminary:
            self.issues.append(DataIssue(key, f"status '{status}': used but flagged", severity="flagged"))
        issued = resource.get("issued")
        return Admitted(time, preliminary, parse_datetime(issued) if type(issued) is str else None)
