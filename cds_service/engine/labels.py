"""Criterion labels and threshold texts rendered from the data they describe.

A criteria file's ``labels:`` entry holds prose with placeholders, never a number: ``{path.to.node}``
renders the node it names in the same file. A threshold node ``{op, value, unit}`` renders as
"< 150 mg/dL", a multiple ``{op, value}`` as "> 2", a plain number as "2", an operator as its symbol, a
list as "0-5" (two numbers) or "a, b, c". ``{path|value}`` renders only the number, ``{path|op}`` only the
operator symbol, ``{path|count}`` the number of entries, ``{path|percent}`` a fraction as "25%". So the
label can never state a cut-off the engine does not use: edit the value and the label follows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cds_service.errors import DataFileError

SYMBOLS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
PLACEHOLDER = re.compile(r"\{([a-z0-9_.\-]+)(?:\|(value|op|count|percent))?\}")
# A number standing on its own (not part of a name such as SpO2, CD25, HLH-2004 or D89.83x).
STANDALONE_NUMBER = re.compile(r"(?<![\w.\-*^])\d+(?:[.,]\d+)*(?![\w*^])")


def number(value: float) -> str:
    return f"{value:,g}" if abs(value) >= 10_000 else f"{value:g}"


def _resolve(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping):
            raise KeyError(path)
        key: Any = part if part in node else int(part) if part.isdigit() else part  # YAML integer keys
        if key not in node:
            raise KeyError(path)
        node = node[key]
    return node


def render_node(node: Any, part: str | None = None) -> str:
    if part == "count":
        return str(len(node))
    if part == "percent":
        return f"{float(node) * 100:g}%"
    if isinstance(node, Mapping) and "value" in node:
        if part == "value":
            return number(float(node["value"]))
        symbol = SYMBOLS[str(node.get("op", ">="))]
        if part == "op":
            return symbol
        unit = f" {node['unit']}" if node.get("unit") else ""
        return f"{symbol} {number(float(node['value']))}{unit}"
    if isinstance(node, bool):
        raise TypeError("a flag is not shown in a label")
    if isinstance(node, int | float):
        return number(float(node))
    if isinstance(node, list) and len(node) == 2 and all(isinstance(v, int | float) for v in node):
        return f"{number(float(node[0]))}-{number(float(node[1]))}"
    if isinstance(node, list):
        return ", ".join(str(v) for v in node)
    if isinstance(node, str) and node in SYMBOLS:
        return SYMBOLS[node]
    return str(node)


def fill(template: str, doc: Mapping[str, Any]) -> str:
    """The template with every placeholder rendered from `doc` (KeyError names an unknown path)."""
    return PLACEHOLDER.sub(lambda m: render_node(_resolve(doc, m.group(1)), m.group(2)), template)


def render_labels(path: str, doc: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Every `labels:` entry of a criteria file, rendered: {criterion id: {"label": ..., "threshold": ...}}.

    Raises DataFileError when a template states a number itself or names data that does not exist."""
    rendered: dict[str, dict[str, str]] = {}
    for criterion, entry in doc.get("labels", {}).items():
        texts = {"label": entry} if isinstance(entry, str) else dict(entry)
        out: dict[str, str] = {}
        for field, template in texts.items():
            where = f"labels.{criterion}.{field}"
            bare = STANDALONE_NUMBER.search(PLACEHOLDER.sub("", template))
            if bare is not None:
                raise DataFileError(path, where, f"states the number {bare.group()}: name the data instead")
            try:
                out[field] = fill(template, doc)
            except (KeyError, TypeError) as exc:
                raise DataFileError(path, where, f"placeholder names no data: {exc}") from None
        rendered[criterion] = out
    return rendered
