"""Parse and validate a CDS Hooks request body into a frozen HookRequest.

Order of checks (each maps to its own status): unknown service id (404) -> not JSON media type (415) ->
malformed JSON (400: also NaN/Infinity, numbers beyond a double, invalid UTF-8 and lone surrogates, which
orjson refuses) -> nesting deeper than MAX_JSON_DEPTH (400, naming the path) -> schema (400, with the JSON
path of the bad field) -> hook not served by this id (400).
FHIR content in `context` is parsed leniently: only the elements the service uses are checked.

The fhirAuthorization access token is transient: its expiry (`expires_in`) is fixed against the moment the
request arrived, and the FHIR client refuses to send it after that.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import has_request_context

from cds_service.engine.typed import TypedObservation
from cds_service.errors import InvalidRequest, NotFound, UnsupportedMediaType
from cds_service.hooks import typed_request, validation
from cds_service.hooks.services import ServiceDefinition, ServiceRegistry
from cds_service.web.observability import request_started_at

# FHIR resources nest about 10-15 levels inside a hook request (Bundle.entry.resource.extension...); 64 is
# generous for real data and stops pathological documents long before orjson's own limit of 1024.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True, slots=True)
class HookRequest:
    """A validated hook call. The access token is transient: never logged, stored or shown in repr."""

    service_id: str
    hook: str
    hook_instance: str
    context: Mapping[str, Any]
    prefetch: Mapping[str, Any]
    fhir_server: str | None = None
    access_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None  # time.monotonic() after which the token must not be used

    @property
    def patient_id(self) -> str:
        return str(self.context["patientId"])

    @property
    def draft_orders(self) -> dict[str, Any]:
        orders = self.context.get("draftOrders")
        return orders if isinstance(orders, dict) else {"resourceType": "Bundle", "entry": []}

    @property
    def selections(self) -> list[str] | None:
        selections = self.context.get("selections")
        return [str(s) for s in selections] if isinstance(selections, list) else None


def is_json_media_type(mimetype: str) -> bool:
    """application/json, or any application/*+json (e.g. application/fhir+json)."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def parse_json_body(body: bytes, mimetype: str) -> Any:
    """Decode a JSON request body; 415 for another media type, 400 for malformed JSON."""
    if not is_json_media_type(mimetype):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {mimetype or 'none'!r}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc.msg} at position {exc.pos}") from None
    check_depth(document)
    return document


def check_depth(document: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise InvalidRequest naming the first object/array nested more than `limit` levels deep.

    Prefetch values are FHIR data that the engine reads along fixed paths, never recursively (nested Bundles
    are bounded in cds_service.engine.resources), so inside them only the parser's own limit (1024) applies:
    walking every element of thousands of prefetched Observations would cost several times the parse itself.
    """
    skip = document.get("prefetch") if isinstance(document, dict) else None
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())] if _container(document) else []
    while stack:
        value, path = stack.pop()
        if len(path) >= limit:
            where = validation.json_path(path) or None
            raise InvalidRequest(f"JSON nested deeper than {limit} levels", expression=where)
        if value is skip and isinstance(value, dict):
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend((child, (*path, key)) for key, child in items if _container(child))


def _container(value: Any) -> bool:
    return isinstance(value, dict | list)


def parse_hook_request(
    registry: ServiceRegistry, service_id: str, body: bytes, mimetype: str
) -> tuple[HookRequest, ServiceDefinition]:
    """Validate a hook call against the registry and the cds-request schema."""
    if service_id not in registry.ids():
        raise NotFound(f"no CDS service with id '{service_id}'")
    # Fast path: typed decoding (cds_service.hooks.typed_request); anything it does not recognise is read
    # the general way below, which then decides.
    document = typed_request.decode(body) if is_json_media_type(mimetype) else None
    if document is None:
        document = parse_json_body(body, mimetype)
    else:
        check_depth(document)
    hook = document.get("hook") if isinstance(document, dict) else None
    if isinstance(hook, str) and registry.find(service_id, hook) is None:
        served = ", ".join(registry.hooks_for(service_id))
        raise InvalidRequest(f"hook: service '{service_id}' serves {served}, not '{hook}'", expression="hook")
    validation.check("cds-request", schema_view(document))
    service = registry.find(service_id, document["hook"])
    assert service is not None  # checked above; the schema guarantees a string hook
    authorization = document.get("fhirAuthorization") or {}
    request = HookRequest(
        service_id=service_id,
        hook=document["hook"],
        hook_instance=document["hookInstance"],
        context=document["context"],
        prefetch=document.get("prefetch") or {},
        fhir_server=document.get("fhirServer"),
        access_token=authorization.get("access_token"),
        token_expires_at=_token_expiry(authorization),
    )
    return request, service


def schema_view(document: Any) -> Any:
    """What the cds-request schema examines: the document with each prefetch value cut to its resourceType.

    The schema constrains a prefetch value only to be null or an object with a resourceType (it is FHIR
    data, checked leniently by the engine), so the cut loses nothing and the validator never walks (or
    converts) thousands of prefetched resources. tests/test_typed_request.py pins that assumption.
    """
    prefetch = document.get("prefetch") if isinstance(document, dict) else None
    if not isinstance(prefetch, dict):
        return document
    return {**document, "prefetch": {key: _resource_stub(value) for key, value in prefetch.items()}}


def _resource_stub(value: Any) -> Any:
    if type(value) is TypedObservation:
        return {"resourceType": "Observation"}
    if isinstance(value, dict):
        return {"resourceType": value["resourceType"]} if "resourceType" in value else {}
    return value


def _token_expiry(authorization: Mapping[str, Any]) -> float | None:
    """When the access token stops being usable: arrival of the request + expires_in (schema: integer)."""
    if "access_token" not in authorization:
        return None
    started = request_started_at() if has_request_context() else time.monotonic()
    return started + float(authorization["expires_in"])
