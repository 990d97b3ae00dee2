"""Reference ranges (ULN/LLN) in the analyte's canonical unit, the same way on both paths.

The Observation's own referenceRange decides when an entry gives a bound (the first that does); otherwise
the analyte's interval from mappings/reference_ranges.yaml is used, and the result says so ("fallback").
"""

from __future__ import annotations

from typing import Any

import msgspec

from cds_service.engine.fhirutil import number
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import RangeSource
from cds_service.engine.observations.quantity import unit_of
from cds_service.engine.typed import RANGES, as_json
from cds_service.engine.units import UnitConverter, UnitError

RangeResult = tuple[float | None, float | None, RangeSource]  # (low, high, where they came from)
NO_RANGE: RangeResult = (None, None, "none")
_NO_QUANTITY: dict[str, Any] = {}


def fallback_range(kb: Knowledge, analyte: str) -> RangeResult:
    """The range of a value whose Observation gives none: the fallback table's, if it has the analyte."""
    fallback = kb.ranges.get(analyte)
    return NO_RANGE if fallback is None else (fallback[0], fallback[1], "fallback")


def convert_range(units: UnitConverter, analyte: str, ranges: list[Any], unit: str) -> RangeResult:
    """The first entry that gives a bound, converted; a limit without a unit is in the value's `unit`."""
    for entry in ranges:
        if not isinstance(entry, dict):
            continue
        low = _limit(units, analyte, entry.get("low"), unit)
        high = _limit(units, analyte, entry.get("high"), unit)
        if low is not None or high is not None:
            return low, high, "observation"
    return NO_RANGE


def _limit(units: UnitConverter, analyte: str, quantity: Any, default_unit: str) -> float | None:
    if not isinstance(quantity, dict):
        return None
    value = number(quantity.get("value"))
    if value is None:
        return None
    try:
        return units.convert(analyte, value, unit_of(quantity) or default_unit)
    except UnitError:
        return None  # an unusable limit is no limit; the value itself is still read


def range_or(
    fallback: RangeResult, units: UnitConverter, analyte: str, ranges: list[Any], unit: str
) -> RangeResult:
    """The Observation's range if it gives a bound, else `fallback` (the analyte's fallback_range)."""
    converted = convert_range(units, analyte, ranges, unit)
    return converted if converted[2] == "observation" else fallback


def typed_entries(text: bytes) -> list[Any] | None:
    """A typed referenceRange array (its JSON bytes) as plain JSON, when it is the plain shape: no range
    or one range of typed quantities. None otherwise (several ranges, another shape): the general path
    decides."""
    try:
        entries = RANGES.decode(text)
    except msgspec.ValidationError:
        return None
    return [as_json(entry) for entry in entries] if len(entries) < 2 else None


def range_key(analyte: str, unit: str, ranges: list[Any]) -> tuple[Any, ...] | None:
    """A key for a single reference range of plain quantities (None when unusual; may be unhashable)."""
    if len(ranges) != 1:
        return None
    entry = ranges[0]
    if type(entry) is not dict:
        return None
    low = entry.get("low")
    high = entry.get("high")
    if low is None:
        low = _NO_QUANTITY
    elif type(low) is not dict:
        return None
    if high is None:
        high = _NO_QUANTITY
    elif type(high) is not dict:
        return None
    return (
        analyte, unit,
        low.get("value"), low.get("code"), low.get("unit"), low.get("system"),
        high.get("value"), high.get("code"), high.get("unit"), high.get("system"),
    )  # fmt: skip
