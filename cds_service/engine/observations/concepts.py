"""What an Observation's code means: LOINC code -> analyte, else a reviewed text match (sCD25)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from cds_service.engine.catalog import LOINC
from cds_service.engine.fhirutil import concept_text
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.typed import CONCEPT, as_json

Mapped = tuple[str, str, bool]  # (analyte, code, fasting)
TEXT_CODE = "(text)"  # the code of a value mapped by its text


class Concept(NamedTuple):
    """What a typed code (CodeableConcept) means, by its JSON bytes: looked up once per distinct concept."""

    plain: bool  # decodes as a typed CodeableConcept; otherwise the general path decides
    first_loinc: str | None  # the first coding's code, if that coding is LOINC (the plain single value)
    mapped: Mapped | None  # by the general rule (Lookups.analyte)


NOT_PLAIN = Concept(False, None, None)


def decode_concept(text: bytes, analyte: Callable[[Any], Mapped | None]) -> Concept:
    """A typed code's meaning; NOT_PLAIN when it does not decode as a CodeableConcept."""
    try:
        concept = CONCEPT.decode(text)
    except msgspec.ValidationError:
        return NOT_PLAIN
    first = concept.coding[0] if concept.coding else None
    loinc = first.code if first is not None and first.system == LOINC else None
    return Concept(True, loinc if isinstance(loinc, str) else None, analyte(as_json(concept)))


def text_analyte(kb: Knowledge, concept: dict[str, Any]) -> Mapped | None:
    """The analyte whose reviewed text patterns match code.text or a coding's display."""
    text = concept_text(concept)
    if text:
        for analyte, matcher in kb.analyte_text.items():
            if matcher.matches(text):
                return analyte, TEXT_CODE, False
    return None


def concept_key(concept: dict[str, Any]) -> tuple[Any, ...] | None:
    """What text matching depends on (code.text and each coding's code and display), when hashable."""
    items = concept.get("coding")
    codings = (
        tuple((c.get("code"), c.get("display")) for c in items if type(c) is dict)
        if type(items) is list
        else ()
    )
    key = (concept.get("text"), codings)
    try:
        hash(key)
    except TypeError:
        return None
    return key
