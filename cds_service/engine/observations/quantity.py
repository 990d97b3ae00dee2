"""A FHIR Quantity as the normalizer reads it: its unit, and the comparators FHIR defines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msgspec import UNSET

from cds_service.engine.catalog import UCUM

COMPARATORS = frozenset({"<", "<=", ">", ">="})
_COMPARATOR: dict[Any, str] = {sign: sign for sign in COMPARATORS}
# The comparator when it is one of FHIR's four, else None (a plain value); a C call on the hot path.
comparator_of: Callable[[Any], str | None] = _COMPARATOR.get
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
