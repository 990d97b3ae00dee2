"""Text alternatives of a chart: a one-paragraph description (the SVG ``<desc>``) and table rows."""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.smart.charts.model import Chart, Series
from cds_service.smart.fmt import fmt_number


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the data table under a chart."""

    day: str
    when: str
    series: str
    value: str
    flag: str


def _day(x: float) -> str:
    return f"{x:.1f}"


def _series_sentence(series: Series, unit: str) -> str:
    if not series.points:
        return f"{series.label}: no values in the period."
    first, last = series.points[0], series.points[-1]
    peak = max(series.points, key=lambda p: p.y)
    low = min(series.points, key=lambda p: p.y)
    return (
        f"{series.label}: {len(series.points)} values from day {_day(first.x)} to day {_day(last.x)}; "
        f"latest {fmt_number(last.y)} {unit} on day {_day(last.x)}; highest {fmt_number(peak.y)} on day "
        f"{_day(peak.x)}; lowest {fmt_number(low.y)} on day {_day(low.x)}."
    )


def describe(chart: Chart) -> str:
    """What the chart shows, in words: series summary, reference lines, CRS periods and drugs."""
    parts = [f"{chart.title} in {chart.unit}{', log scale' if chart.log_y else ''}; x axis: {chart.x_label}."]
    parts += [_series_sentence(s, chart.unit) for s in chart.series]
    if chart.lines:
        parts.append("Reference lines: " + "; ".join(line.label for line in chart.lines) + ".")
    if chart.bands:
        periods = [f"{b.label} day {_day(b.start)} to {_day(b.end)}" for b in chart.bands]
        parts.append("Shaded: " + "; ".join(periods) + ".")
    if chart.markers:
        parts.append("Drugs: " + "; ".join(_drug_summary(chart)) + ".")
    return " ".join(parts)


def _drug_summary(chart: Chart) -> list[str]:
    by_kind: dict[str, list[float]] = {}
    for marker in chart.markers:
        by_kind.setdefault(marker.kind, []).append(marker.x)
    out = []
    for kind, days in by_kind.items():
        span = f"day {_day(days[0])}" if len(days) == 1 else f"days {_day(min(days))} to {_day(max(days))}"
        out.append(f"{kind.replace('_', ' ')} x{len(days)} ({span})")
    return out


def rows(chart: Chart) -> list[Row]:
    """Every plotted value in time order (the table that stands in for the picture)."""
    out = [
        Row(_day(p.x), p.when, s.label, f"{fmt_number(p.y)} {chart.unit}".strip(), p.flag)
        for s in chart.series
        for p in s.points
    ]
    return sorted(out, key=lambda r: (float(r.day), r.when, r.series))
