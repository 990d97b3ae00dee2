"""The optional configuration file (CDS_CONFIG_FILE): YAML or JSON, merged *under* the environment.

The file holds the same variables as the environment, by the same names::

    # /etc/cds-service.yaml
    CDS_PUBLIC_BASE_URL: https://cds.example.org
    CDS_HOOK_DEADLINE_S: 2.5
    CDS_CORS_ORIGINS: [https://ehr.example.org, https://sandbox.example.org]
    DATABASE_URL: postgresql+psycopg://cds@db.internal/cds

A variable set (non-empty) in the environment wins over the file. Values are checked exactly like
environment values (cds_service.config), after this module turns them into strings: booleans -> ``1`` or
``0``, numbers as written, a list of strings (CDS_CORS_ORIGINS) joined with commas, ``null`` = not set.
Unknown names, a file that cannot be read or parsed, and a top level that is not a mapping fail at start
with a ConfigurationError naming CDS_CONFIG_FILE and the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cds_service.errors import ConfigurationError

VARIABLE = "CDS_CONFIG_FILE"


@dataclass(frozen=True, slots=True)
class FileSettings:
    """The variables a configuration file provided (as strings) and where it is."""

    path: Path | None = None
    values: dict[str, str] = field(default_factory=dict)

    def explain(self, error: ConfigurationError) -> ConfigurationError:
        """`error`, saying which file the bad value came from (when it came from the file)."""
        if self.path is None or error.variable not in self.values:
            return error
        return ConfigurationError(error.variable, f"{error.problem} (set in {self.path})")


def apply_config_file(env: Mapping[str, str], known: Iterable[str]) -> tuple[Mapping[str, str], FileSettings]:
    """`env` with the file's variables filled in underneath, and what the file provided."""
    raw_path = env.get(VARIABLE, "").strip()
    if not raw_path:
        return env, FileSettings()
    path = Path(raw_path)
    values = read_config_file(path, frozenset(known) - {VARIABLE})
    # An empty environment value counts as unset (as in cds_service.config), so the file fills it.
    used = {k: v for k, v in values.items() if not env.get(k, "").strip()}
    return {**env, **used}, FileSettings(path, used)


def read_config_file(path: Path, known: frozenset[str]) -> dict[str, str]:
    """Parse and check the file; every value as the string the environment would hold."""
    document = _parse(path)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigurationError(VARIABLE, f"{path}: expected a mapping of variable names to values")
    values: dict[str, str] = {}
    for name, value in document.items():
        if name not in known:
            hint = "it cannot name another file" if name == VARIABLE else f"known: {', '.join(sorted(known))}"
            raise ConfigurationError(VARIABLE, f"{path}: unknown setting {name!r} ({hint})")
        text = _as_text(path, str(name), value)
        if text is not None:
            values[str(name)] = text
    return values


def _parse(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(VARIABLE, f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(VARIABLE, f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(VARIABLE, f"{path}: invalid YAML{where}") from None


def _as_text(path: Path, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    raise ConfigurationError(
        VARIABLE, f"{path}: {name}: expected a string, number, boolean or list of strings"
    )


def config_file_line(environ: Mapping[str, str] | None, known: Iterable[str]) -> str:
    """For `config check`: the file in use and how many variables it set, or that there is none."""
    env = os.environ if environ is None else environ
    raw_path = env.get(VARIABLE, "").strip()
    if not raw_path:
        return "(none; set CDS_CONFIG_FILE to use one)"
    _merged, used = apply_config_file(env, known)
    return f"{raw_path} ({len(used.values)} setting(s) taken from it; the environment wins)"
