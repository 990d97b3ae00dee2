"""Render-time invariants of a CDS Hooks 2.0 card (reference cds-hooks.md 1.1 and 1.7-1.10).

Checked on every card before it leaves the renderer; a violation raises CardInvariantError (a bug in a
template or the renderer), so a malformed card is never emitted silently.
"""

from __future__ import annotations

from typing import Any

INDICATORS = frozenset({"info", "warning", "critical"})
SELECTION_BEHAVIORS = frozenset({"at-most-one", "any"})
ACTION_TYPES = frozenset({"create", "update", "delete"})
LINK_TYPES = frozenset({"absolute", "smart"})
_CONTAINERS = (str, dict, list)  # JSON's strings, objects and arrays: empty is not allowed
MAX_SUMMARY = 139  # the spec says "< 140 characters"


class CardInvariantError(ValueError):
    """A rendered card breaks a CDS Hooks rule; the message names the JSON path."""


def _has_empty(value: Any) -> bool:
    """Whether any element of `value` is null or empty; no paths built (the common, passing case).
    A loop over a stack rather than recursion: a card has hundreds of elements and is checked every hook."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind: type | None = type(item)
        if kind not in _CONTAINERS:  # null, a number or boolean, or a subclass of str/dict/list
            if item is None:
                return True
            kind = next((base for base in _CONTAINERS if isinstance(item, base)), None)
        if kind is None:
            continue
        if not item:
            return True
        if kind is dict:
            extend(item.values())
        elif kind is list:
            extend(item)
    return False


def _no_empty(value: Any, path: str) -> None:
    """JSON elements are never null or empty ("", [], {}) (spec 1.1)."""
    if _has_empty(value):
        _find_empty(value, path)


def _find_empty(value: Any, path: str) -> None:
    if value is None or (isinstance(value, str | list | dict) and len(value) == 0):
        raise CardInvariantError(f"{path}: null or empty")
    if isinstance(value, dict):
        for key, item in value.items():
            _find_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _find_empty(item, f"{path}[{index}]")


def _require(condition: bool, path: str, problem: str) -> None:
    if not condition:
        raise CardInvariantError(f"{path}: {problem}")


def _check_summary_and_detail(card: dict[str, Any], path: str) -> None:
    summary = card.get("summary")
    if not isinstance(summary, str):
        raise CardInvariantError(f"{path}.summary: required string")
    _require(len(summary) <= MAX_SUMMARY, f"{path}.summary", f"{len(summary)} characters (must be < 140)")
    _require("\n" not in summary, f"{path}.summary", "must be one line")
    detail = card.get("detail")
    if detail is not None:
        _require(isinstance(detail, str), f"{path}.detail", "must be a string")
        _require("<" not in detail, f"{path}.detail", "raw HTML (or an unescaped '<') in Markdown")


def _check_suggestions(card: dict[str, Any], path: str) -> None:
    suggestions = card.get("suggestions")
    if suggestions is None:
        return
    _require(card.get("selectionBehavior") in SELECTION_BEHAVIORS, path, "suggestions need selectionBehavior")
    for index, item in enumerate(suggestions):
        where = f"{path}.suggestions[{index}]"
        _require(isinstance(item.get("label"), str), where, "label required")
        for a_index, action in enumerate(item.get("actions", [])):
            at = f"{where}.actions[{a_index}]"
            _require(action.get("type") in ACTION_TYPES, at, "type must be create, update or delete")
            _require(isinstance(action.get("description"), str), at, "description required")
            if action["type"] == "delete":
                _require(isinstance(action.get("resourceId"), str), at, "delete needs resourceId")
            else:
                _require(isinstance(action.get("resource"), dict), at, "create/update needs resource")


def _check_links_and_reasons(card: dict[str, Any], path: str) -> None:
    for index, reason in enumerate(card.get("overrideReasons", [])):
        where = f"{path}.overrideReasons[{index}]"
        for key in ("system", "code", "display"):
            _require(isinstance(reason.get(key), str), where, f"Coding needs {key}")
    for index, link in enumerate(card.get("links", [])):
        where = f"{path}.links[{index}]"
        _require(link.get("type") in LINK_TYPES, where, "type must be absolute or smart")
        _require(isinstance(link.get("label"), str), where, "label required")
        _require(str(link.get("url", "")).startswith(("https://", "http://")), where, "absolute url required")
        _require("appContext" not in link or link["type"] == "smart", where, "appContext only on smart links")


def check_card(card: dict[str, Any], path: str = "card") -> None:
    """Raise CardInvariantError unless `card` satisfies every rule above."""
    _no_empty(card, path)
    _check_summary_and_detail(card, path)
    _require(card.get("indicator") in INDICATORS, f"{path}.indicator", "must be info, warning or critical")
    source = card.get("source")
    _require(
        isinstance(source, dict) and isinstance(source.get("label"), str), f"{path}.source", "label required"
    )
    _check_suggestions(card, path)
    _check_links_and_reasons(card, path)
