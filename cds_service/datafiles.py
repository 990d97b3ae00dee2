"""Load YAML/JSON data files and validate them against their JSON Schemas (draft 2020-12).

A malformed file fails loudly at start-up with a DataFileError naming the file and the field.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from cds_service.errors import DataFileError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def mappings_dir() -> Path:
    """Directory holding terminology, unit and threshold data (override: CDS_MAPPINGS_DIR)."""
    return Path(os.environ.get("CDS_MAPPINGS_DIR", PROJECT_ROOT / "mappings"))


def cards_dir() -> Path:
    """Directory holding card templates and treatment content (override: CDS_CARDS_DIR)."""
    return Path(os.environ.get("CDS_CARDS_DIR", PROJECT_ROOT / "cards"))


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


@cache
def _validator(schema_path: Path) -> Draft202012Validator:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def read_data(path: Path) -> Any:
    """Parse a YAML or JSON file, raising DataFileError on syntax errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(str(path), "$", f"cannot read file ({exc.strerror})") from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DataFileError(str(path), "$", f"not valid YAML/JSON ({exc})") from exc


def load_validated(path: Path, schema_path: Path) -> Any:
    """Read `path` and validate it against `schema_path`; return the parsed data."""
    data = read_data(path)
    errors = sorted(_validator(schema_path).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        raise DataFileError(str(path), _json_path(first.absolute_path), first.message)
    return data


def check_thresholds(path: Path, data: Any, trail: tuple[Any, ...] = ()) -> None:
    """Every object with an `op` key is a threshold: op in the allowed set and a numeric value."""
    if isinstance(data, dict):
        if "op" in data:
            if data["op"] not in {"<", "<=", ">", ">="}:
                raise DataFileError(str(path), _json_path((*trail, "op")), "unknown operator")
            if "value" in data and not isinstance(data["value"], int | float):
                raise DataFileError(str(path), _json_path((*trail, "value")), "must be a number")
        for key, value in data.items():
            check_thresholds(path, value, (*trail, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            check_thresholds(path, value, (*trail, index))
