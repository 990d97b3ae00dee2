"""Numbers, units, times and words as a person reads them: '25,244 ng/mL', '39 °C', 'INR 1.49', '34 x 10⁹/L',
'day +13 18:11'. Internally the engine keeps canonical UCUM codes; only the card text is translated, through
`display_units` of cards/templates.yaml (a unit without an entry is shown as its code, never guessed)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

_NUMBER = re.compile(r"(?<![\w.])(\d{4,})(?![\w])")


def number(value: float) -> str:
    """Few decimals, thousands separated: 25244 -> '25,244', 1.49 -> '1.49', 0.36 -> '0.36'."""
    if abs(value) >= 100 or float(value).is_integer():
        return f"{round(value):,}"
    return f"{value:,.3g}" if abs(value) < 1 else f"{round(value, 2):,g}"


def unit(code: str, units: Mapping[str, str]) -> str:
    return units.get(code, code)


def quantity(value: float, code: str, units: Mapping[str, str]) -> str:
    """'25,244 ng/mL', '39 °C', '34 x 10⁹/L'; a unit shown as '' (INR) leaves the bare number."""
    shown = unit(code, units)
    return f"{number(value)} {shown}" if shown else number(value)


def text(raw: str, units: Mapping[str, str]) -> str:
    """Free text from the engine (a threshold, a label) with UCUM codes and long numbers made readable."""
    out = raw
    for code, shown in sorted(units.items(), key=lambda item: -len(item[0])):
        if code != shown and code in out:
            out = re.sub(rf"\s+{re.escape(code)}(?![\w*/])", f" {shown}" if shown else "", out)
    return _NUMBER.sub(lambda m: f"{int(m.group(1)):,}", out).strip()


def in_sentence(name: str) -> str:
    """An analyte's display name inside a sentence: 'Fibrinogen' -> 'fibrinogen'; 'AST', 'aPTT', 'D-dimer',
    'IL-6' keep their capitals."""
    word = name.split(" ")[0]
    if len(word) < 2 or not word[0].isupper() or word[1] == "-" or any(c.isupper() for c in word[1:]):
        return name
    return name[0].lower() + name[1:]


def day_time(when: datetime, infusion: datetime | None) -> str:
    """'day +13 18:11' relative to the infusion's calendar day; the date when the infusion is unknown."""
    if infusion is None:
        return when.strftime("%Y-%m-%d %H:%M")
    day = (when.date() - infusion.date()).days
    return f"day {day:+d} {when.strftime('%H:%M')}"
