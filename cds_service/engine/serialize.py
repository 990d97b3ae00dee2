"""Serialize engine results to the documented JSON document (camelCase keys; schema in
cds_service/schemas/evaluation.schema.json)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec
import orjson

from cds_service.engine.model import Instruments


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@cache
def _fields(cls: type) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f.name, camel(f.name))
        for f in dataclasses.fields(cls)
        if not f.name.startswith("_") and f.metadata.get("json", True)
    )


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@cache
def _struct_fields(cls: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    hidden: frozenset[str] = getattr(cls, "NOT_SERIALIZED", frozenset())
    return tuple((name, camel(name)) for name in cls.__struct_fields__ if name not in hidden)


def to_jsonable(value: Any) -> Any:
    """Dataclasses and structs -> dicts with camelCase keys, datetimes -> ISO 8601 UTC, tuples -> lists."""
    if isinstance(value, Instruments):
        return {key: to_jsonable(result) for key, result in value.json_items()}
    if isinstance(value, msgspec.Struct):
        return {key: to_jsonable(getattr(value, name)) for name, key in _struct_fields(type(value))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: to_jsonable(getattr(value, name)) for name, key in _fields(type(value))}
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def to_json_bytes(value: Any, *, indent: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(to_jsonable(value), option=option)
