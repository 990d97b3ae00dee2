"""Display formatting shared by charts and templates (times in UTC, units as lab reports print them)."""

from __future__ import annotations

from datetime import UTC, datetime

_UNIT_DISPLAY = {  # UCUM codes -> the way they are printed on lab reports
    "Cel": "°C",
    "10*9/L": "×10⁹/L",
    "10*3/uL": "×10³/µL",
    "ug/L": "µg/L",
    "umol/L": "µmol/L",
    "{INR}": "",
    "mm[Hg]": "mmHg",
}


def fmt_time(value: datetime | None) -> str:
    """``2026-03-15 18:11 UTC`` (the dashboard shows every instant in UTC, like the engine)."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_date(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d")


def fmt_unit(unit: str | None) -> str:
    if not unit:
        return ""
    return _UNIT_DISPLAY.get(unit, unit)


def fmt_number(value: float | None) -> str:
    """Up to 3 significant decimals, thousands separators: 25,244 / 0.29 / 38.5."""
    if value is None:
        return "—"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")


def fmt_day(value: datetime | None, origin: datetime | None) -> str:
    """Calendar day relative to `origin` (the infusion), the way the engine counts day post-infusion."""
    if value is None or origin is None:
        return ""
    days = (value.astimezone(UTC).date() - origin.astimezone(UTC).date()).days
    return f"day {days}"
