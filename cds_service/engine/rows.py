"""Flowsheet rows that are not measurements: the oxygen delivery device, and grades documented by the care
team (CRS, ICANS, ICE score) under a site's own codes (mappings/oxygen_support.yaml, site_flowsheets.yaml).

They are read in a second, cheap pass over the Observations: what a code means is looked up once per
distinct code (by its JSON bytes on the hook fast path), so the thousands of lab results cost a lookup each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET

from cds_service.engine.fhirutil import (
    codings,
    concept_text,
    number,
    parse_datetime,
    period_start,
    resource_key,
)
from cds_service.engine.knowledge import Knowledge, OxygenLevel
from cds_service.engine.typed import CONCEPT, TypedObservation, as_dict, as_json

SKIPPED_STATUSES = frozenset({"entered-in-error", "cancelled"})
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """Oxygen support at one time, by the device the row names."""

    time: datetime
    level: OxygenLevel
    resource_id: str
    text: str
    issued: datetime | None = None


@dataclass(frozen=True, slots=True)
class DocumentedRow:
    """A grade documented by the care team: kind crs_grade | icans_grade | ice_score."""

    kind: str
    time: datetime
    value: int
    resource_id: str
    issued: datetime | None = None


@dataclass(slots=True)
class Rows:
    devices: list[DeviceRow] = field(default_factory=list)
    documented: list[DocumentedRow] = field(default_factory=list)


def _meaning(kb: Knowledge, concept: Any) -> tuple[str, str] | None:
    """("device", "") or ("documented", kind) for a row code, else None. A plain loop: it runs once per
    Observation read as JSON (the typed fast path looks each distinct code up once)."""
    items = concept.get("coding") if type(concept) is dict else None
    if type(items) is not list:
        return None
    devices, documented = kb.oxygen.observation_codes, kb.documented_rows
    for coding in items:
        if type(coding) is not dict:
            continue
        system, code = coding.get("system"), coding.get("code")
        if type(system) is not str or type(code) is not str:
            continue  # not a coding (the normalizer reports malformed codes)
        key = (system, code)
        if key in devices:
            return "device", ""
        kind = documented.get(key)
        if kind is not None:
            return "documented", kind
    return None


def read_rows(kb: Knowledge, observations: list[Any]) -> Rows:
    rows = Rows()
    by_bytes: dict[bytes, tuple[str, str] | None] = {}
    for observation in observations:
        if type(observation) is TypedObservation:
            if observation.code is UNSET:
                continue
            raw = bytes(observation.code)
            if raw not in by_bytes:
                by_bytes[raw] = _typed_meaning(kb, raw)
            meaning = by_bytes[raw]
            if meaning is None:
                continue
            resource = as_dict(observation)
        else:
            resource = observation
            meaning = _meaning(kb, resource.get("code")) if isinstance(resource, dict) else None
            if meaning is None:
                continue
        _read(kb, resource, meaning, rows)
    rows.devices.sort(key=lambda r: r.time)
    rows.documented.sort(key=lambda r: r.time)
    return rows


def _typed_meaning(kb: Knowledge, raw: bytes) -> tuple[str, str] | None:
    try:
        concept = as_json(CONCEPT.decode(raw))
    except msgspec.ValidationError:  # a code that is not a CodeableConcept: the normalizer reports it
        return None
    return _meaning(kb, concept)


def _read(kb: Knowledge, resource: dict[str, Any], meaning: tuple[str, str], rows: Rows) -> None:
    if resource.get("status") in SKIPPED_STATUSES:
        return
    time = period_start(resource, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
    if time is None:
        return
    issued = parse_datetime(resource.get("issued"))
    key = resource_key(resource)
    what, kind = meaning
    if what == "device":
        concept = resource.get("valueCodeableConcept")
        text = concept_text(concept) or str(resource.get("valueString") or "")
        codes = [(system, code) for system, code, _ in codings(concept)]
        level = kb.oxygen.level_of(codes, text)
        if level is not None:
            rows.devices.append(DeviceRow(time, level, key, text, issued))
        return
    value = _integer(resource)
    if value is not None:
        rows.documented.append(DocumentedRow(kind, time, value, key, issued))


def _integer(resource: dict[str, Any]) -> int | None:
    """A documented grade or score: valueInteger, valueQuantity.value, or the number in a string or code."""
    if isinstance(resource.get("valueInteger"), int):
        return int(resource["valueInteger"])
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict):
        value = number(quantity.get("value"))
        return int(value) if value is not None and value == int(value) else None
    texts = [str(resource.get("valueString") or "")]
    concept = resource.get("valueCodeableConcept")
    texts += [code for _, code, _ in codings(concept)] + [concept_text(concept)]
    for text in texts:
        match = _DIGITS.search(text)
        if match:
            return int(match.group())
    return None
