"""JSON Schema (draft 2020-12) validation of CDS Hooks payloads, with errors that carry a JSON path.

The schemas live in cds_service/schemas/ (cds-request, cds-response, feedback, discovery). They are the
project's own, derived from the STU2 tables: HL7 publishes no JSON Schema for CDS Hooks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from cds_service.errors import InvalidRequest

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMAS = ("cds-request", "cds-response", "feedback", "discovery")
_MAX_MESSAGE = 200


@cache
def validator(name: str) -> Draft202012Validator:
    """The checked validator for `schemas/<name>.schema.json` (loaded once)."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


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
    error = best_match(validator(name).iter_errors(instance))
    if error is not None:
        message, path = describe(error)
        raise InvalidRequest(message, expression=path)
    if name == "feedback":
        _check_feedback_timestamps(instance)


def _check_feedback_timestamps(document: Any) -> None:
    """`2026-02-30T25:61:00Z` matches the schema's pattern but is no instant: 400, not a 500 when stored."""
    from cds_service.feedback_store import normalize_timestamp

    for index, item in enumerate(document["feedback"]):
        try:
            normalize_timestamp(item["outcomeTimestamp"])
        except (ValueError, OverflowError):  # no such day or hour; beyond year 1..9999 in UTC
            path = f"feedback[{index}].outcomeTimestamp"
            raise InvalidRequest(f"{path}: not a valid date-time", expression=path) from None


def errors(name: str, instance: Any) -> list[str]:
    """Every error of `instance` against schema `name`, as `path: message` strings (for tests and logs)."""
    return [describe(e)[0] for e in validator(name).iter_errors(instance)]
