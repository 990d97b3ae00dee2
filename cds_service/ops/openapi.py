"""The OpenAPI 3.1 document of the service, served at GET /openapi.json.

Request and response bodies reuse the JSON Schemas of cds_service/schemas/ (the same files the service
validates with): each becomes a component, and its ``$defs`` become sibling components with the ``$ref``s
rewritten, because a ``#/$defs/...`` reference inside an embedded schema would otherwise resolve against
the OpenAPI document's root. The paths are described in cds_service/ops/openapi_paths.py.

:func:`document_for` serves only the operations whose route the app really has (the benchmark floor,
for instance, appears only with CDS_BENCH_FLOOR=1); tests/test_openapi.py keeps
:func:`full_document` and the app's url_map in sync in both directions.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from flask import Flask

from cds_service import __version__
from cds_service.hooks.validation import SCHEMA_DIR
from cds_service.ops.openapi_components import component_extras
from cds_service.ops.openapi_paths import path_items
from cds_service.ops.openapi_watch import watch_components
from cds_service.web.state import get_state

OPENAPI_VERSION = "3.1.0"
# Component name -> schema file (cds_service/schemas/<file>.schema.json).
SCHEMA_COMPONENTS = {
    "CdsRequest": "cds-request",
    "CdsResponse": "cds-response",
    "Feedback": "feedback",
    "Discovery": "discovery",
}
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})  # added by Flask to every GET / every route
_RULE_VARIABLE = re.compile(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DESCRIPTION = (
    "CDS Hooks 2.0 (STU2) service that screens CAR-T patients for IEC-HS (ASTCT 2023). Discovery, hook "
    "calls and feedback follow the CDS Hooks specification; the other routes are operations endpoints "
    "(health, readiness, metrics), the card preview page, the SMART on FHIR dashboard and the watch list. "
    "Outside development mode every /cds-services and /watch/api call needs a client JWT (CDS Hooks 2.0 "
    "'Trusting CDS Clients')."
)


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `/cds-services/<service_id>` -> `/cds-services/{service_id}`."""
    return _RULE_VARIABLE.sub(r"{\1}", rule)


def route_operations(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every route of `app`, without the automatic HEAD/OPTIONS."""
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - AUTOMATIC_METHODS
    }


def documented_operations(document: dict[str, Any], *, include_options: bool = False) -> set[tuple[str, str]]:
    """(path, method) of every operation in an OpenAPI document (OPTIONS only when asked)."""
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in _METHODS and (include_options or method != "options")
    }


def full_document(service_ids: Iterable[str], hooks: Iterable[str] = ()) -> dict[str, Any]:
    """Every documented operation, whether or not a given app registers its route."""
    extras = component_extras()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "IEC-HS CDS Hooks service",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "this server"}],
        "tags": _tags(),
        "paths": path_items(sorted(set(service_ids)), sorted(set(hooks))),
        "components": {
            "schemas": {**schema_components(), **extras["schemas"], **watch_components()},
            "headers": extras["headers"],
            "securitySchemes": extras["securitySchemes"],
        },
    }


def document_for(app: Flask) -> dict[str, Any]:
    """The document for `app`: only operations whose route `app` has (OPTIONS kept where the route is)."""
    registry = get_state(app).registry
    document = full_document(registry.ids(), (service.hook for service in registry.services))
    served_paths = {path for path, _ in route_operations(app)}
    served = route_operations(app)
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        kept = {
            key: value
            for key, value in item.items()
            if key not in _METHODS or (path, key) in served or (key == "options" and path in served_paths)
        }
        if any(key in _METHODS for key in kept):
            paths[path] = kept
    document["paths"] = paths
    used = {
        tag
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict)
        for tag in op.get("tags", ())
    }
    document["tags"] = [tag for tag in document["tags"] if tag["name"] in used]
    return document


def schema_components() -> dict[str, Any]:
    """The project's JSON Schemas as OpenAPI components, `$defs` hoisted (`<Component>_<def>`)."""
    return copy.deepcopy(_schema_components())


@cache
def _schema_components() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for name, file in SCHEMA_COMPONENTS.items():
        schema = json.loads((SCHEMA_DIR / f"{file}.schema.json").read_text(encoding="utf-8"))
        definitions = schema.pop("$defs", {})
        for key in ("$schema", "$id"):
            schema.pop(key, None)
        components[name] = _rewrite_refs(schema, name)
        for def_name, definition in definitions.items():
            components[f"{name}_{def_name}"] = _rewrite_refs(definition, name)
    return components


def _rewrite_refs(node: Any, component: str) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", f"#/components/schemas/{component}_")
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value, component)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, component) for item in node]
    return node


def _tags() -> list[dict[str, str]]:
    return [
        {"name": "cds-hooks", "description": "CDS Hooks 2.0: discovery, hook calls, feedback"},
        {"name": "operations", "description": "Health, readiness, metrics, this document"},
        {"name": "preview", "description": "Card preview page (development aid)"},
        {"name": "smart", "description": "SMART on FHIR dashboard (needs a live SMART launch)"},
        {"name": "watch", "description": "The watch list: API, worklist page, Subscription endpoint"},
        {"name": "benchmark", "description": "Benchmark floor (only with CDS_BENCH_FLOOR=1)"},
    ]
