"""Small, lenient readers for the FHIR elements the engine uses (plain dicts, no model validation)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def parse_datetime(value: Any) -> datetime | None:
    """Parse a FHIR date/dateTime/instant; partial dates map to their first instant, naive to UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        match = _PARTIAL_DATE.match(value)
        if not match:
            return None
        try:
            parsed = datetime(int(match.group(1)), int(match.group(2) or 1), 1)
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def number(value: Any) -> float | None:
    """A finite JSON number (not a bool, not NaN/Infinity, not absurdly large), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    if not math.isfinite(result) or abs(result) > 1e15:
        return None
    return result


def codings(concept: Any) -> Iterator[tuple[str, str, str]]:
    """(system, code, display) of every coding of a CodeableConcept, skipping malformed ones."""
    if not isinstance(concept, dict):
        return
    items = concept.get("coding")
    if not isinstance(items, list):
        return
    for coding in items:
        if isinstance(coding, dict):
            code = coding.get("code")
            if isinstance(code, str):
                system = coding.get("system")
                display = coding.get("display")
                yield (
                    system if isinstance(system, str) else "",
                    code,
                    display if isinstance(display, str) else "",
                )


def concept_text(concept: Any) -> str:
    """code.text plus every coding display, lower-cased, for text matching."""
    if not isinstance(concept, dict):
        return ""
    parts = [concept["text"]] if isinstance(concept.get("text"), str) else []
    parts.extend(display for _, _, display in codings(concept) if display)
    return " | ".join(parts).lower()


def reference_id(reference: Any) -> str | None:
    """The `Type/id` (or `#id`) of a Reference, if any."""
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return str(reference["reference"])
    return None


def resource_key(resource: dict[str, Any]) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid if isinstance(rid, str) else '(no id)'}"


def period_start(resource: dict[str, Any], *names: str) -> datetime | None:
    """First usable time among `names` (dateTime fields or Period.start/end)."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict):
            found = parse_datetime(value.get("start")) or parse_datetime(value.get("end"))
        else:
            found = parse_datetime(value)
        if found is not None:
            return found
    return None


def period_end(resource: dict[str, Any], name: str) -> datetime | None:
    """The end of the Period element `name`, if it is a Period with a usable end."""
    value = resource.get(name)
    return parse_datetime(value.get("end")) if isinstance(value, dict) else None


def concept_label(concept: Any) -> str:
    """A short human label: code.text, else the first display, else the first code."""
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    for _, code, display in codings(concept):
        return display or code
    return ""
