r"""The compiled validator (jsonschema-rs) and the reference one (jsonschema) agree on every schema.

The compiled validator decides (cds_service/hooks/validation.py); the reference one names the error. They must
agree, except on the known regex dialect differences, where the compiled validator follows ECMA-262 as
JSON Schema specifies: Python's `$` also matches before a final newline, and Python's `\d` matches any
Unicode decimal digit. The reference validator accepts such strings; the service does not.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.errors import InvalidRequest
from cds_service.hooks import validation
from tests.fuzz_strategies import feedback_requests, hook_requests, json_values, mutated

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PARITY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def dialect_sensitive(value: Any) -> bool:
    """Contains a string on which Python's and ECMA-262's regex dialects may disagree."""
    if isinstance(value, str):
        return value.endswith("\n") or any(ch.isdecimal() and not ch.isascii() for ch in value)
    if isinstance(value, dict):
        return any(dialect_sensitive(k) or dialect_sensitive(v) for k, v in value.items())
    if isinstance(value, list):
        return any(dialect_sensitive(v) for v in value)
    return False


def agree(name: str, document: Any) -> None:
    fast = validation.fast_validator(name).is_valid(document)
    reference = not any(validation.validator(name).iter_errors(document))
    if fast:
        assert reference, (name, "compiled accepts what the reference rejects", json.dumps(document)[:500])
    else:
        assert not reference or dialect_sensitive(document), (name, json.dumps(document)[:500])


@cache
def hook_fixture_bodies() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((FIXTURES / "hooks").glob("*.json"))]


def test_hook_fixtures_are_valid_in_both() -> None:
    bodies = hook_fixture_bodies()
    assert len(bodies) >= 10
    for body in bodies:
        assert validation.fast_validator("cds-request").is_valid(body)
        agree("cds-request", body)


@PARITY
@given(st.data())
def test_requests_agree(data: st.DataObject) -> None:
    call = data.draw(hook_requests(("https://ehr.example.org/fhir",)))
    agree("cds-request", json.loads(call.body))


@settings(PARITY, max_examples=60)
@given(st.data())
def test_mutated_fixture_requests_agree(data: st.DataObject) -> None:
    smallest = sorted(hook_fixture_bodies(), key=lambda body: len(json.dumps(body)))[:6]
    body = data.draw(st.sampled_from(smallest))
    agree("cds-request", data.draw(mutated(body, 3)))


@PARITY
@given(st.data())
def test_feedback_agrees(data: st.DataObject) -> None:
    agree("feedback", json.loads(data.draw(feedback_requests()).body))


@pytest.mark.parametrize("name", validation.SCHEMAS)
@PARITY
@given(document=json_values)
def test_arbitrary_json_agrees(name: str, document: Any) -> None:
    agree(name, document)


@pytest.mark.parametrize(
    "text",
    [
        "Patient/١٢٣",  # non-ASCII digits: `\d` differs between regex dialects
        "Practitioner/a b",
        "Practitioner/" + "x" * 65,
        "",
    ],
)
def test_pattern_edge_cases_agree(text: str) -> None:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": text, "patientId": text.partition("/")[2] or text},
    }
    agree("cds-request", body)


@pytest.mark.parametrize(
    "stamp", ["2026-11-24T10:00:00Z", "2026-11-24T10:00:00+01:00", "٢٠٢٦-11-24T10:00:00Z"]
)
def test_feedback_timestamp_patterns_agree(stamp: str) -> None:
    document = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": stamp}]}
    agree("feedback", document)
    assert validation.fast_validator("feedback").is_valid(document) == stamp.isascii()


def test_a_final_newline_is_rejected_with_the_field_named() -> None:
    """JSON Schema patterns are ECMA-262: "abc" + newline does not match the id pattern (a 400, not a
    patient id with a newline sent on to the FHIR server)."""
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/dr-1", "patientId": "abc\n"},
    }
    assert not any(validation.validator("cds-request").iter_errors(body))  # the reference dialect accepts
    with pytest.raises(InvalidRequest) as caught:
        validation.check("cds-request", body)
    assert caught.value.expression == "context.patientId"
    assert "abc" not in str(caught.value)  # the value (possibly PHI) is not echoed
    assert validation.errors("cds-request", body) == [str(caught.value)]
