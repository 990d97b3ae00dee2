"""``--set FILE:KEY=VALUE``: a run under a changed project-defined setting.

FILE is a YAML file of the mappings directory (``criteria/iec_hs.yaml``; the ``.yaml`` may be left out),
KEY a dotted path to an existing key (``required.second_rise.with_fever_hours``), VALUE a YAML scalar or
flow value (``48``, ``0.3``, ``true``, ``[a, b]``) of the same kind as the value it replaces. The mappings
are copied to the output folder (so the run says what it used, and every worker can read them), edited there
and loaded, which validates them: a bad file, key or value is an error before anything runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds_service.datafiles import mappings_dir
from cds_service.engine.knowledge import load_knowledge


class SettingError(Exception):
    """A --set that names no existing setting or cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Override:
    file: str  # relative to the mappings directory, with .yaml
    key: tuple[str, ...]
    value: Any
    text: str  # as given

    @classmethod
    def parse(cls, text: str) -> Override:
        target, sep, raw = text.partition("=")
        file, colon, key = target.strip().partition(":")
        if not sep or not colon or not file or not key:
            raise SettingError(
                f"--set {text!r}: expected FILE:KEY=VALUE, e.g. "
                "criteria/iec_hs.yaml:required.second_rise.with_fever_hours=48"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise SettingError(f"--set {text!r}: the value is not YAML ({exc})") from exc
        name = file if file.endswith((".yaml", ".yml")) else f"{file}.yaml"
        return cls(name, tuple(key.split(".")), value, text)


def _assign(document: Any, override: Override) -> None:
    node = document
    for depth, part in enumerate(override.key):
        where = ".".join(override.key[:depth]) or "the top level"
        if not isinstance(node, dict) or part not in node:
            keys = ", ".join(sorted(str(k) for k in node)) if isinstance(node, dict) else "none"
            raise SettingError(
                f"--set {override.text!r}: no key '{part}' at {where} of {override.file} (keys there: {keys})"
            )
        if depth == len(override.key) - 1:
            _check_kind(override, node[part])
            node[part] = override.value
        node = node[part]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else "empty"


def _check_kind(override: Override, current: Any) -> None:
    """The new value is of the same kind as the shipped one (the schemas do not type every setting)."""
    if _kind(current) != _kind(override.value) and current is not None:
        raise SettingError(
            f"--set {override.text!r}: {'.'.join(override.key)} is {_kind(current)} "
            f"(now {current!r}), got {override.value!r}"
        )


def apply_overrides(texts: list[str], destination: Path, source: Path | None = None) -> Path:
    """Copy the mappings to `destination`, apply every --set, load (and so validate) them; the copy's path."""
    overrides = [Override.parse(t) for t in texts]
    source = source or mappings_dir()
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination)
    for override in overrides:
        path = destination / override.file
        if not path.is_file() or destination.resolve() not in path.resolve().parents:
            raise SettingError(f"--set {override.text!r}: no file {override.file} in the mappings")
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        _assign(document, override)
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_knowledge(destination.resolve())
    return destination.resolve()
