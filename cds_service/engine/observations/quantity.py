"""A FHIR Quantity as the normalizer reads it, on plain JSON: its unit and its comparator."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from cds_service.engine.catalog import UCUM

COMPARATORS = frozenset({"<", "<=", ">", ">="})
UCUM_OR_UNSET = frozenset({UCUM, UNSET})  # the systems a typed Quantity's code may come from


def unit_of(quantity: dict[str, Any]) -> str | None:
    """The unit: the UCUM code, else the human-readable unit, else a code of another system."""
    code = quantity.get("code")
    system = quantity.get("system")
    if isinstance(code, str) and (system is None or system == UCUM):
        return code
    unit = quantity.get("unit")
    if isinstance(unit, str):
        return unit
    return code if isinstance(code, str) else None
