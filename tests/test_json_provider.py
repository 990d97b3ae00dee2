"""The orjson JSON provider writes what Flask's own provider would (the same JSON), in C."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from cds_service.web.json_provider import OrjsonProvider


def _both(value: Any) -> tuple[bytes, bytes]:
    ours, flasks = Flask("ours"), Flask("flasks")
    ours.json = OrjsonProvider(ours)
    flasks.json = DefaultJSONProvider(flasks)
    flasks.json.sort_keys = False
    with ours.app_context():
        mine = ours.json.response(value).get_data()
    with flasks.app_context():
        theirs = flasks.json.response(value).get_data()  # type: ignore[attr-defined]  # sansio type
    return mine, theirs


@pytest.mark.parametrize(
    "value",
    [
        {"cards": []},
        {"b": 1, "a": [1.5, None, True, "x"], "nested": {"z": {"y": ["deep"]}}},
        [1, 2, 3],
        "text",
        None,
    ],
)
def test_plain_json_is_written_byte_for_byte_as_flask_would(value: Any) -> None:
    mine, theirs = _both(value)
    assert mine == theirs


def test_non_ascii_text_is_the_same_json_in_utf8() -> None:
    mine, theirs = _both({"summary": "IEC-HS ≥ grade 2 — naïve"})
    assert json.loads(mine) == json.loads(theirs)
    assert "≥".encode() in mine


@pytest.mark.parametrize(
    "value",
    [
        {"when": datetime(2026, 11, 24, 5, 0, tzinfo=UTC)},  # Flask writes an HTTP date, orjson ISO
        {"dose": Decimal("8.0")},
        {1: "int key"},
        {"x": math.nan},  # orjson would write null, the standard library NaN
        {"x": [math.inf]},
    ],
)
def test_anything_else_is_left_to_flask(value: Any) -> None:
    mine, theirs = _both(value)
    assert mine == theirs
