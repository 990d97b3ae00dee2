"""Named placeholders in card template fields: parse (at load) and fill (at render), one field at a time."""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import lru_cache

_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template field is malformed or a placeholder has no value."""


def placeholders(text: str) -> set[str]:
    """The `{name}` placeholders of `text`: bare identifiers only (no format specs or indexing)."""
    return set(_placeholders(text))


@lru_cache(maxsize=4096)  # template wording: the same few hundred fields on every card
def _placeholders(text: str) -> frozenset[str]:
    names: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise TemplateError(f"malformed placeholder in {text!r}: {exc}") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"placeholder {{{name}}} must be a bare name in {text!r}")
        names.add(name)
    return frozenset(names)


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace every placeholder of `text` with its value; a missing value is an error, never left blank."""
    missing = _placeholders(text) - values.keys()
    if missing:
        raise TemplateError(f"no value for {sorted(missing)} in {text!r}")
    return text.format_map(dict(values))
