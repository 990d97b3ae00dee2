"""JSON Schema (draft 2020-12) validation of CDS Hooks payloads, with errors that carry a JSON path.

The schemas live in cds_service/schemas/ (cds-request, cds-response, feedback, discovery). They are the
project's own, derived from the STU2 tables: HL7 publishes no JSON Schema for CDS Hooks.

Two validators per schema. jsonschema-rs (compiled, microseconds per document) decides: it follows the
ECMA-262 regex dialect JSON Schema specifies. The reference `jsonschema` implementation runs only after a
"no", to name the most relevant error with its path; where it finds none (Python's `$` also matches before
a final newline, so it accepts "abc\n" for an id pattern), the compiled validator's first error is named.
tests/test_validation_parity.py checks that the two agree everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from cds_service.errors import InvalidRequest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMAS = ("cds-request", "cds-response", "feedback", "discovery")
_MAX_MESSAGE = 200


@cache
def _schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    return document


@cache
def validator(name: str) -> Draft202012Validator:
    """The checked reference validator for `schemas/<name>.schema.json` (loaded once): error details."""
    return Draft202012Validator(_schema(name))


@cache
def fast_validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """The compiled validator for the same schema: the yes/no answer on the hot path."""
    return jsonschema_rs.Draft202012Validator(_schema(name))


def json_path(parts: Iterable[Any]) -> str:
    """`["context", "selections", 0]` -> `context.selections[0]` (FHIRPath-like, as in issue.expression)."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe(error: ValidationError) -> tuple[str, str | None]:
    """A short message and the JSON path of the offending field (None for the document itself)."""
    parts = list(error.absolute_path)
    kind, value = error.validator, _validator_value(error)
    if kind in {"required", "dependentRequired"}:
        missing = _missing_property(error)
        parts.append(missing)
        message = f"missing required field '{missing}'"
    elif kind == "type":
        message = f"expected {value}"
    elif kind in {"enum", "const"}:
        allowed = list(value) if kind == "enum" else [value]
        message = "must be one of " + ", ".join(json.dumps(v) for v in allowed)
    elif kind == "pattern":
        message = f"does not match the pattern {value}"
    elif kind in {"minLength", "minItems", "minProperties"}:
        message = "must not be empty"
    elif kind == "maxLength":
        message = f"longer than {value} characters"
    elif kind == "not":
        message = "contains a field that is not allowed here"
    else:
        message = error.message[:_MAX_MESSAGE]
    path = json_path(parts) or None
    return (f"{path}: {message}" if path else message), path


def _validator_value(error: ValidationError) -> Any:
    return error.validator_value


def _missing_property(error: ValidationError) -> str:
    instance = error.instance if isinstance(error.instance, dict) else {}
    value = _validator_value(error)
    if error.validator == "required":
        names = list(value)
    else:  # dependentRequired: {trigger: [names]}
        names = [n for trigger, deps in value.items() if trigger in instance for n in deps]
    return next((str(n) for n in names if n not in instance), str(names[0]) if names else "?")


def check(name: str, instance: Any) -> None:
    """Raise InvalidRequest naming the most relevant error of `instance` against schema `name`, then the
    checks a pattern cannot express (e.g. a timestamp shaped right but naming no real instant)."""
    if not fast_validator(name).is_valid(instance):
        message, path = first_error(name, instance)
        raise InvalidRequest(message, expression=path)
    if name == "feedback":
        _check_feedback_timestamps(instance)


def first_error(name: str, instance: Any) -> tuple[str, str | None]:
    """The most relevant error of an invalid `instance` as (message, JSON path): see the module docstring."""
    error = best_match(validator(name).iter_errors(instance))
    if error is not None:
        return describe(error)
    for compiled in fast_validator(name).iter_errors(instance):
        path = json_path(compiled.instance_path) or None
        keyword = compiled.schema_path[-1] if compiled.schema_path else "schema"
        message = f"does not conform to the schema ({keyword})"  # no value echoed: it may be PHI
        return (f"{path}: {message}" if path else message), path
    return "does not conform to the schema", None


def _check_feedback_timestamps(document: Any) -> None:
    """`2026-02-30T25:61:00Z` matches the schema's pattern but is no instant: 400, not a 500 when stored."""
    from cds_service.hooks.feedback import normalize_timestamp

    for index, item in enumerate(document["feedback"]):
        try:
            normalize_timestamp(item["outcomeTimestamp"])
        except (ValueError, OverflowError):  # no such day or hour; beyond year 1..9999 in UTC
            path = f"feedback[{index}].outcomeTimestamp"
            raise InvalidRequest(f"{path}: not a valid date-time", expression=path) from None


def errors(name: str, instance: Any) -> list[str]:
    """Every error of `instance` against schema `name`, as `path: message` strings (for tests and logs)."""
    if fast_validator(name).is_valid(instance):
        return []
    return [describe(e)[0] for e in validator(name).iter_errors(instance)] or [first_error(name, instance)[0]]
