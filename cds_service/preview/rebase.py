"""Re-base a FHIR Bundle in time: shift every date so that a chosen instant becomes another (now).

Used by the preview's "re-base to now" option, which lets a fixture scenario be sent to any server (not only
a development one) and evaluated at "now". Every string that is a complete FHIR ``dateTime``/``instant``
(``YYYY-MM-DDThh:mm[:ss[.fff]]`` with ``Z`` or an offset) moves by the exact shift; every complete
``date`` (``YYYY-MM-DD``, e.g. birthDate) moves by the number of calendar days the shifted instant moved.
Partial dates (``YYYY``, ``YYYY-MM``) and every other string are left alone.

Caveat (documented on the page): calendar-day boundaries move with the time of day of the shift, so
day-based results (e.g. "day +13 after infusion") can differ by one from the scenario's expectations. The
page's default, evaluating at the scenario's own instant, has no such caveat.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

_PARTS = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FRACTION_SPEC = {0: "seconds", 1: "milliseconds", 2: "milliseconds", 3: "milliseconds"}


def shift_for(at: datetime, now: datetime) -> timedelta:
    """The shift that moves `at` to `now`, in whole seconds (timestamps keep second precision)."""
    return timedelta(seconds=round((now - at).total_seconds()))


def rebase(value: Any, shift: timedelta, day_shift: int) -> Any:
    """A copy of a JSON value with every complete dateTime moved by `shift` and date by `day_shift` days."""
    if isinstance(value, dict):
        return {key: rebase(item, shift, day_shift) for key, item in value.items()}
    if isinstance(value, list):
        return [rebase(item, shift, day_shift) for item in value]
    if isinstance(value, str):
        if _PARTS.fullmatch(value):
            return shift_datetime(value, shift)
        if _DATE.fullmatch(value):
            return shift_date(value, day_shift)
    return value


def day_shift_for(at: datetime, shift: timedelta) -> int:
    """Calendar days between `at` and `at + shift` (in `at`'s own offset)."""
    return ((at + shift).date() - at.date()).days


def shift_datetime(text: str, shift: timedelta) -> str:
    """Move one FHIR dateTime, keeping its offset style (Z or +hh:mm) and its precision."""
    match = _PARTS.fullmatch(text)
    if match is None:
        return text
    minutes, seconds, fraction, offset = match.groups()
    normalised = f"{minutes}:{seconds or '00'}.{(fraction or '').ljust(6, '0')[:6]}{offset}"
    try:
        parsed = datetime.fromisoformat(normalised.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:  # e.g. month 13: not a date, leave it
        return text
    precision = "minutes" if seconds is None else _FRACTION_SPEC.get(len(fraction or ""), "microseconds")
    moved = (parsed + shift).isoformat(timespec=precision)
    return moved.replace("+00:00", "Z") if offset in ("Z", "z") else moved


def shift_date(text: str, days: int) -> str:
    """Move one FHIR date by whole days; an impossible date (e.g. 2026-02-30) is left alone."""
    try:
        return (date.fromisoformat(text) + timedelta(days=days)).isoformat()
    except ValueError:
        return text
