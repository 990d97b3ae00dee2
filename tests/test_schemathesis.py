"""Schemathesis against the served OpenAPI document, in process (WSGI): for every documented operation,
generated requests (valid ones; invalid ones too where the operation takes input), and every response must
conform -- status documented, content type, body schema, headers -- and never be a 5xx.

Bounded: MAX_EXAMPLES per operation and mode (well under two minutes in all on 2 cores). The SMART
dashboard routes are excluded: each needs a live SMART launch (authorization server, session cookie);
tests/test_smart_*.py cover them. The app is a development-mode app (no client JWT) with its own SQLite
store, and a FHIR server policy that refuses every fhirServer, so generated requests never leave the host.

Two constraints the document states in words but a JSON Schema cannot: a hook call's `hook` must be served
by the id in the path, and 412 answers schema-valid calls without usable prefetch. So generated hook calls
are sent to the service of their hook, and "valid data accepted" is not required of the two POSTs whose
valid bodies can still be refused for such reasons (400/412 are documented and checked).

(Schemathesis' lazy pytest loader does not run on pytest 9, so each operation is a parametrized test that
drives the operation's Hypothesis strategy itself.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cds_service import create_app
from cds_service.ops.openapi import documented_operations, full_document
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config

MAX_EXAMPLES = 60
DOCUMENT = full_document([], ["patient-view"])
NOT_FUZZED = ("/smart", "/_bench")  # needs a live SMART launch / not registered by default
OPERATIONS = sorted(
    op for op in documented_operations(DOCUMENT, include_options=True) if not op[0].startswith(NOT_FUZZED)
)
WITH_INPUT = {(p, m) for p, m in OPERATIONS if "requestBody" in DOCUMENT["paths"][p][m]}
SEMANTIC_REFUSALS = {
    ("/cds-services/{service_id}", "post"),
    ("/preview/hook-request", "post"),
    ("/preview/evidence", "post"),  # a valid form can still name an unknown service or lack prefetch
}
CASES = [(p, m, schemathesis.GenerationMode.POSITIVE) for p, m in OPERATIONS] + [
    (p, m, schemathesis.GenerationMode.NEGATIVE) for p, m in sorted(WITH_INPUT)
]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    config = dev_config(tmp_path_factory.mktemp("schemathesis"), FHIR_SERVER_POLICY=lambda _url: False)
    return create_app(config)


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=lambda v: getattr(v, "value", v))
def test_operation_conforms(
    api_schema: schemathesis.BaseSchema,
    fuzz_app: Flask,
    path: str,
    method: str,
    mode: schemathesis.GenerationMode,
) -> None:
    operation = api_schema[path][method.upper()]
    service_of_hook = {s.hook: s.id for s in get_state(fuzz_app).registry.services}
    excluded: list[Any] = [positive_data_acceptance] if (path, method) in SEMANTIC_REFUSALS else []

    @given(data=st.data())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        hook = case.body.get("hook") if isinstance(case.body, dict) else None
        if path == "/cds-services/{service_id}" and hook in service_of_hook:
            case.path_parameters = {"service_id": service_of_hook[hook]}
        case.call_and_validate(excluded_checks=excluded)

    run()


def test_an_impossible_feedback_timestamp_is_a_client_error(fuzz_app: Flask) -> None:
    """Found by this fuzzing (a 500 before): a timestamp matching the pattern but naming no instant."""
    item = {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-02-30T00:00:00Z"}
    client = fuzz_app.test_client()
    response = client.post("/cds-services/iec-hs-screening/feedback", json={"feedback": [item]})
    assert response.status_code == 400


def test_every_served_operation_but_smart_is_fuzzed(fuzz_app: Flask) -> None:
    served = documented_operations(
        fuzz_app.test_client().get("/openapi.json").get_json(), include_options=True
    )
    assert {op for op in served if not op[0].startswith(NOT_FUZZED)} == set(OPERATIONS)
