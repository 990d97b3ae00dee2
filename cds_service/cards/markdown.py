"""GitHub-flavoured Markdown building blocks with escaping: card details never carry raw HTML.

Every piece of text (template or patient data) goes through :func:`md`: `<`, `>` and `&` become entities and
Markdown punctuation is backslash-escaped, so a lab unit such as ``10*9/L`` cannot turn into emphasis and a
value cannot inject a tag or a link. Structure (headings, bullets, tables, citation markers) is added here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_PUNCTUATION = "\\`*_[]|~#"
# One C-level translate per string instead of a Python loop per character (hundreds of cells per card).
_ESCAPES = str.maketrans({**_ENTITIES, **{char: "\\" + char for char in _PUNCTUATION}})


@lru_cache(maxsize=8192)  # most text is template wording, the same on every card
def md(text: str) -> str:
    """Escape `text` for use inside a Markdown paragraph, list item or table cell (one line)."""
    return " ".join(text.split()).translate(_ESCAPES)


def heading(text: str) -> str:
    return f"### {md(text)}"


def bullets(items: Iterable[str]) -> list[str]:
    """Already-escaped items as a bullet list."""
    return [f"- {item}" for item in items]


def table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    """A GFM table; cells must already be escaped (md() escapes the pipe)."""
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(cell or "-" for cell in row) + " |" for row in rows)
    return lines


class Citer:
    """Numbers citations in order of first use and renders them as a reference list."""

    LEGEND = "V verified, S from the review only, R UNVERIFIED, D project-derived."

    def __init__(self, citations: Mapping[str, Mapping[str, Any]]) -> None:
        self._citations = citations
        self._order: list[str] = []

    def cite(self, ids: Iterable[str]) -> str:
        """A marker such as `[1, 3]` for the given citation ids (registering new ones)."""
        numbers: list[int] = []
        for cid in ids:
            if cid not in self._citations:
                raise KeyError(f"unknown citation id {cid}")
            if cid not in self._order:
                self._order.append(cid)
            numbers.append(self._order.index(cid) + 1)
        return "[" + ", ".join(str(n) for n in sorted(set(numbers))) + "]"

    def used(self) -> tuple[str, ...]:
        """The citation ids cited so far, in citation-number order."""
        return tuple(self._order)

    def references(self) -> list[str]:
        lines: list[str] = []
        for number, cid in enumerate(self._order, start=1):
            entry = self._citations[cid]
            where = entry.get("doi") and f"doi:{entry['doi']}" or entry.get("url", "")
            tail = f" {md(str(where))}" if where else ""
            lines.append(f"{number}. {md(str(entry['text']))}{tail} \\[{entry['status']}\\]")
        return [*lines, "", md(self.LEGEND)] if lines else []
