"""The OpenAPI document: valid OpenAPI 3.1, every route of the app documented and nothing documented that
the app does not have, bodies are the project's JSON Schemas, and every reference resolves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from schemathesis.specs.openapi.definitions import OPENAPI_31

import cds_service
from cds_service import create_app
from cds_service.hooks.validation import SCHEMA_DIR
from cds_service.ops.openapi import (
    SCHEMA_COMPONENTS,
    documented_operations,
    full_document,
    openapi_path,
    route_operations,
)
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config

OPTIONAL_PREFIXES = ("/smart", "/_bench", "/watch")  # blueprints an app may not register


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(dev_config(tmp_path_factory.mktemp("openapi")))


@pytest.fixture(scope="module")
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    errors = sorted(Draft202012Validator(OPENAPI_31).iter_errors(document), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # each body schema is a valid 2020-12 schema
    broken = {**document, "paths": {"no-slash": {}}, "info": {"title": "x"}}
    assert len(list(Draft202012Validator(OPENAPI_31).iter_errors(broken))) >= 2  # the check has teeth


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def walk(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [ref for value in node.values() for ref in walk(value)]
        if isinstance(node, list):
            return [ref for item in node for ref in walk(item)]
        return []

    for ref in walk(document):
        assert ref.startswith("#/components/"), ref
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]


def test_every_route_is_documented_and_nothing_else(app: Flask, document: dict[str, Any]) -> None:
    routes = route_operations(app)
    assert documented_operations(document) == routes
    registry = get_state(app).registry
    full = full_document(registry.ids(), (s.hook for s in registry.services))
    missing_in_app = documented_operations(full) - routes
    for prefix in OPTIONAL_PREFIXES:
        if not any(path.startswith(prefix) for path, _ in routes):
            # A blueprint that is not registered (e.g. the benchmark floor by default) may be absent as a
            # whole; once registered, each of its routes must match the document exactly.
            missing_in_app = {op for op in missing_in_app if not op[0].startswith(prefix)}
    assert missing_in_app == set(), "documented in cds_service/ops/openapi_*.py but not served"


def test_the_benchmark_floor_is_documented_when_enabled(tmp_path_factory: pytest.TempPathFactory) -> None:
    app = create_app(dev_config(tmp_path_factory.mktemp("bench"), CDS_BENCH_FLOOR=True))
    document = app.test_client().get("/openapi.json").get_json()
    assert documented_operations(document) == route_operations(app)
    assert ("/_bench/floor", "post") in route_operations(app)
    assert ("/_bench/read/{service_id}", "post") in route_operations(app)


def test_the_production_document_has_no_benchmark_routes(document: dict[str, Any]) -> None:
    assert not [path for path in document["paths"] if path.startswith("/_bench")]
    assert "benchmark" not in {tag["name"] for tag in document["tags"]}


def test_options_is_documented_where_cors_preflights_happen(app: Flask, document: dict[str, Any]) -> None:
    with_options = {path for path, item in document["paths"].items() if "options" in item}
    cds_rules = {openapi_path(r.rule) for r in app.url_map.iter_rules() if r.rule.startswith("/cds-services")}
    assert with_options == cds_rules
    client = app.test_client()
    for path in (
        "/cds-services",
        "/cds-services/iec-hs-screening",
        "/cds-services/iec-hs-screening/feedback",
    ):
        assert client.options(path).status_code == 200


def test_bodies_are_the_project_schemas(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    for name, file in SCHEMA_COMPONENTS.items():
        original = json.loads((SCHEMA_DIR / f"{file}.schema.json").read_text(encoding="utf-8"))
        assert components[name]["required"] == original["required"]
        assert components[name]["properties"].keys() == original["properties"].keys()
        for definition in original.get("$defs", {}):
            assert f"{name}_{definition}" in components
    invoke = document["paths"]["/cds-services/{service_id}"]["post"]
    body = invoke["requestBody"]["content"]["application/json"]["schema"]
    assert body["allOf"][0] == {"$ref": "#/components/schemas/CdsRequest"}
    ok = invoke["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/CdsResponse"}
    feedback = document["paths"]["/cds-services/{service_id}/feedback"]["post"]["requestBody"]
    feedback_schema = feedback["content"]["application/json"]["schema"]
    assert feedback_schema["allOf"][0] == {"$ref": "#/components/schemas/Feedback"}


def test_service_ids_and_hooks_come_from_the_registry(app: Flask, document: dict[str, Any]) -> None:
    registry = get_state(app).registry
    invoke = document["paths"]["/cds-services/{service_id}"]["post"]
    service_id = next(p for p in invoke["parameters"] if p["name"] == "service_id")
    assert set(service_id["schema"]["enum"]) == registry.ids()
    body = invoke["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["allOf"][1]["properties"]["hook"]["enum"]) == {s.hook for s in registry.services}


def test_info_carries_the_version(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == cds_service.__version__


def test_the_document_is_the_same_for_the_same_app(app: Flask, document: dict[str, Any]) -> None:
    again = app.test_client().get("/openapi.json").get_json()
    assert again == document
