"""The fast path for reading a hook request: decode the bytes with types, not into generic JSON.

A CAR-T stay sends thousands of Observations; building a Python dict for every element of every one of them
(category, subject, narrative, performer, ...) costs more than everything the engine then does with them.
Here msgspec decodes the request against typed structs in one pass: Observations become
`engine.typed.TypedObservation` (only the elements the engine reads, type-checked while decoding, the rest
skipped), Bundles and the other resource types the engine reads become the same JSON objects the lenient
path would build (every FHIR R4 element declared, from schemas/fhir-r4-elements.json, so nothing is lost),
except that a Bundle entry keeps only its `resource` (nothing reads fullUrl, search, request, response).

Anything this path does not recognise exactly (malformed JSON, an element of the wrong type, a resource
type or element outside the declared ones, an unknown top-level field) makes `decode` return None, and the
caller reads the request the general way (orjson, then schema and lenient checks), which decides the
answer. One exception: an Observation's `code` and `referenceRange` (and its components') are kept as raw
JSON here and type-checked by the normalizer once per distinct value; an Observation whose code or range
does not fit is read the lenient way, exactly as on the general path. So the fast path only ever handles
documents the general path would read the same way; the hook fixtures are answered identically on both
paths, and hypothesis properties compare the two (tests/test_typed_request.py).

One documented difference: an integer too large for 64 bits inside an untyped element stays an integer
here, where orjson reads it as a float.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, TypedDict

import msgspec
from msgspec import UNSET, UnsetType

from cds_service.engine.typed import TypedObservation

ELEMENTS_FILE = Path(__file__).resolve().parent.parent / "schemas" / "fhir-r4-elements.json"
REQUEST_FIELDS = ("hook", "hookInstance", "context", "prefetch", "fhirServer", "fhirAuthorization")


def _elements() -> dict[str, list[str]]:
    elements: dict[str, list[str]] = json.loads(ELEMENTS_FILE.read_text(encoding="utf-8"))["elements"]
    return elements


def _untyped(name: str, fields: list[str], **options: Any) -> Any:
    """A struct with every listed element as plain JSON, absent ones UNSET; unknown elements refused."""
    return msgspec.defstruct(
        name, [(field, Any, UNSET) for field in fields], forbid_unknown_fields=True, **options
    )


# The resource union, referred to by name from _Entry.resource (Bundles nest), and the Bundle struct:
# both made by _decoder().
Resource: Any = None
_BUNDLE: list[Any] = []


class _Entry(TypedDict, total=False):
    """A Bundle entry, decoded straight into a dict that keeps only its resource (the engine reads
    nothing else of an entry: fullUrl, search, request, response)."""

    resource: Resource


@cache
def _decoder() -> msgspec.json.Decoder[Any]:
    global Resource
    elements = _elements()
    others = [
        _untyped(name, fields, tag=name, tag_field="resourceType")
        for name, fields in elements.items()
        if name != "Bundle"
    ]
    bundle: Any = msgspec.defstruct(
        "Bundle",
        [("entry", list[_Entry] | UnsetType, UNSET)]
        + [(f, Any, UNSET) for f in elements["Bundle"] if f != "entry"],
        forbid_unknown_fields=True,
        tag="Bundle",
        tag_field="resourceType",
        gc=False,
    )
    _BUNDLE.append(bundle)
    Resource = _union([TypedObservation, bundle, *others])
    request: Any = msgspec.defstruct(
        "HookRequestBody",
        [(field, Any, UNSET) for field in REQUEST_FIELDS if field != "prefetch"]
        + [("prefetch", dict[str, Resource | None] | UnsetType, UNSET)],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(request)


def _union(types: list[Any]) -> Any:
    union: Any = types[0]
    for kind in types[1:]:
        union = union | kind
    return union


def decode(body: bytes) -> dict[str, Any] | None:
    """The request as the general path would read it (Observations typed), or None: read it that way."""
    try:
        decoded = _decoder().decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    document: dict[str, Any] = {}
    for field in REQUEST_FIELDS:
        value = getattr(decoded, field)
        if value is not UNSET:
            document[field] = value
    if "prefetch" in document:
        document["prefetch"] = {key: _plain(value) for key, value in document["prefetch"].items()}
    return document


def _plain(value: Any) -> Any:
    """Bundles and untyped resources as JSON objects; TypedObservation (and None) as they are."""
    if value is None or type(value) is TypedObservation:
        return value
    if type(value) is _BUNDLE[0]:
        bundle = _fields(value)
        for entry in bundle.get("entry", ()):
            resource = entry.get("resource")
            if resource is not None and type(resource) is not TypedObservation:
                entry["resource"] = _plain(resource)
        return bundle
    plain: dict[str, Any] = msgspec.to_builtins(value)
    return plain


def _fields(struct: msgspec.Struct) -> dict[str, Any]:
    """The struct's present elements as a dict (the resourceType tag included), values as decoded."""
    found: dict[str, Any] = {}
    info = struct.__struct_config__
    if info.tag_field is not None:
        found[info.tag_field] = info.tag
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if value is not UNSET:
            found[name] = value
    return found
