"""Parse and validate a CDS Hooks request body into a frozen HookRequest.

Order of checks (each maps to its own status): unknown service id (404) -> not JSON media type (415) ->
malformed JSON (400) -> schema (400, with the JSON path of the bad field) -> hook not served by this id (400).
FHIR content in `context` is parsed leniently: only the elements the service uses are checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cds_service import validation
from cds_service.errors import InvalidRequest, NotFound, UnsupportedMediaType
from cds_service.services import ServiceDefinition, ServiceRegistry


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
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc.msg} at position {exc.pos}") from None


def parse_hook_request(
    registry: ServiceRegistry, service_id: str, body: bytes, mimetype: str
) -> tuple[HookRequest, ServiceDefinition]:
    """Validate a hook call against the registry and the cds-request schema."""
    if service_id not in registry.ids():
        raise NotFound(f"no CDS service with id '{service_id}'")
    document = parse_json_body(body, mimetype)
    hook = document.get("hook") if isinstance(document, dict) else None
    if isinstance(hook, str) and registry.find(service_id, hook) is None:
        served = ", ".join(registry.hooks_for(service_id))
        raise InvalidRequest(f"hook: service '{service_id}' serves {served}, not '{hook}'", expression="hook")
    validation.check("cds-request", document)
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
    )
    return request, service
