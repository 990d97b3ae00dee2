"""Observation as the engine reads it, typed as FHIR R4 defines it, for decoding straight from bytes.

The hook fast path (cds_service.hooks.typed_request) decodes prefetched Observations into these msgspec
structs: the elements below are parsed and type-checked in C while decoding, every other element of the
Observation (category, subject, performer, narrative, ...) is skipped without building Python objects.
A request whose Observations do not fit these types (a number where FHIR has a string, ...) is not
decoded this way at all: it takes the lenient dict path, which reports such values as data issues.

`code` and `referenceRange` (of the Observation and of its components) are kept as their raw JSON
(`msgspec.Raw`, a view of the request bytes): the same few concepts and ranges repeat across thousands
of Observations, so the normalizer decodes and type-checks each distinct one once (CONCEPT, RANGES) and
looks the rest up by their bytes. An Observation whose code or range does not fit those types is read
the lenient way, which decides and reports.

The structs are not tracked by the cyclic garbage collector (`gc=False`): decoded JSON cannot form a
reference cycle, and thousands of them are made and freed per hook.

Every element the lenient normalizer (cds_service.engine.observations) reads must be declared here:
tests/test_typed_request.py records the elements it reads and compares.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class Coding(msgspec.Struct, frozen=True, gc=False):  # frozen (and tuples): concepts are hashable
    system: str | UnsetType = UNSET
    code: str | UnsetType = UNSET
    display: str | UnsetType = UNSET


class CodeableConcept(msgspec.Struct, frozen=True, gc=False):
    coding: tuple[Coding, ...] | UnsetType = UNSET
    text: str | UnsetType = UNSET


class Quantity(msgspec.Struct, frozen=True, gc=False):  # frozen: hashable, equal ranges convert once
    value: int | float | UnsetType = UNSET  # int stays int: the reported value is echoed as sent
    comparator: str | UnsetType = UNSET
    unit: str | UnsetType = UNSET
    system: str | UnsetType = UNSET
    code: str | UnsetType = UNSET


class ReferenceRange(msgspec.Struct, frozen=True, gc=False):
    low: Quantity | UnsetType = UNSET
    high: Quantity | UnsetType = UNSET


class Meta(msgspec.Struct, gc=False):
    lastUpdated: Any = UNSET  # which of two versions of a resource is newer (the rest of meta is unused)


class Component(msgspec.Struct, gc=False):
    code: msgspec.Raw | UnsetType = UNSET  # a CodeableConcept (CONCEPT), checked where first read
    valueQuantity: Quantity | UnsetType = UNSET
    dataAbsentReason: Any = UNSET
    referenceRange: msgspec.Raw | UnsetType = UNSET  # an array of ReferenceRange (RANGES)


class TypedObservation(msgspec.Struct, tag="Observation", tag_field="resourceType", gc=False):
    """The Observation elements the engine reads; periods and the less common elements stay plain JSON."""

    id: str | UnsetType = UNSET
    meta: Meta | UnsetType = UNSET
    status: str | UnsetType = UNSET
    code: msgspec.Raw | UnsetType = UNSET  # a CodeableConcept (CONCEPT), checked where first read
    component: list[Component] | UnsetType = UNSET
    effectiveDateTime: str | UnsetType = UNSET
    effectiveInstant: Any = UNSET
    effectivePeriod: Any = UNSET
    issued: Any = UNSET
    valueQuantity: Quantity | UnsetType = UNSET
    # Non-numeric values: an oxygen device row, a documented grade (engine.rows reads them as plain JSON).
    valueCodeableConcept: Any = UNSET
    valueString: Any = UNSET
    valueInteger: Any = UNSET
    dataAbsentReason: Any = UNSET
    referenceRange: msgspec.Raw | UnsetType = UNSET  # an array of ReferenceRange (RANGES)


CONCEPT = msgspec.json.Decoder(CodeableConcept)
RANGES = msgspec.json.Decoder(list[ReferenceRange])


def as_json(value: msgspec.Struct) -> Any:
    """A decoded struct as the plain JSON it came from (its declared elements; arrays as lists)."""
    return _JSON_DECODER.decode(_JSON_ENCODER.encode(value))


def as_dict(observation: TypedObservation) -> dict[str, Any]:
    """The same Observation as plain JSON (the declared elements), for the lenient path."""
    document: dict[str, Any] = as_json(observation)
    return document


_JSON_ENCODER = msgspec.json.Encoder()
_JSON_DECODER = msgspec.json.Decoder()


def typed_meta(observation: TypedObservation) -> Any:
    """meta as JSON (only lastUpdated is decoded)."""
    meta = observation.meta
    return None if meta is UNSET else as_json(meta)
