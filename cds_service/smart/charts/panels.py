"""The dashboard's trend charts, built from an engine result and the knowledge base.

Which charts exist and which published cut-offs each one draws is declared in :data:`CHART_DEFS` as *paths
into mappings/criteria/*.yaml*; the values themselves always come from the knowledge base (converted to the
analyte's canonical unit by ``Knowledge.threshold``), never from this module. :func:`check_chart_defs`
resolves every path at start-up so a renamed YAML key fails the app factory, not a page view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.engine.instruments.registry import ASTCT_CRS
from cds_service.engine.knowledge import SYMBOLS, Knowledge
from cds_service.engine.model import EvaluationResult, LabValue
from cds_service.errors import DataFileError
from cds_service.smart.charts.defs import CHART_DEFS, DRUG_SYMBOLS, ChartDef, UlnMultipleRef
from cds_service.smart.charts.model import Band, Chart, EventLine, Marker, Point, RefLine, Series
from cds_service.smart.charts.scales import day_ticks
from cds_service.smart.charts.svg import LABEL_SEPARATOR
from cds_service.smart.fmt import fmt_number, fmt_time, fmt_unit

MAX_SPAN_DAYS = 60.0  # longer courses show their last 60 days (the table below each chart lists all values)


def _lookup(kb: Knowledge, instrument: str, path: tuple[str, ...]) -> Any:
    node: Any = kb.criteria[instrument]
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node.get(key) if isinstance(node, dict) else None
        if node is None:
            where = kb.directory / "criteria" / f"{instrument}.yaml"
            raise DataFileError(str(where), ".".join(path), "chart threshold path not found")
    return node


def threshold_lines(kb: Knowledge, definition: ChartDef) -> list[RefLine]:
    """The published cut-offs of a chart, in canonical units; equal values share one labelled line."""
    merged: dict[float, list[str]] = {}
    for ref in definition.thresholds:
        threshold = kb.threshold(ref.analyte, _lookup(kb, ref.instrument, ref.path))
        # The published unit is kept in the label only when it differs from the chart's (HLH-2004's g/L Hb).
        unit = "" if threshold.original_unit == threshold.unit else f" {fmt_unit(threshold.original_unit)}"
        text = f"{ref.label} {SYMBOLS[threshold.op]} {fmt_number(threshold.original_value)}{unit}"
        merged.setdefault(round(threshold.value, 9), []).append(text)
    return [RefLine(value, LABEL_SEPARATOR.join(labels), "threshold") for value, labels in merged.items()]


def uln_multiple(kb: Knowledge, ref: UlnMultipleRef) -> tuple[str, float]:
    """(operator symbol, multiple) of a `k x ULN` criterion."""
    node = _lookup(kb, ref.instrument, ref.path)
    if isinstance(node, dict):
        return SYMBOLS[node["op"]], float(node["value"])
    parent = _lookup(kb, ref.instrument, ref.path[:-1])
    return SYMBOLS[parent.get("op", ">")], float(node)


def check_chart_defs(kb: Knowledge) -> None:
    """Resolve every threshold path once (raises DataFileError naming the YAML file and path)."""
    for definition in CHART_DEFS:
        threshold_lines(kb, definition)
        for ref in definition.uln_multiples:
            uln_multiple(kb, ref)


def day_of(time: datetime, origin: datetime) -> float:
    return (time - origin).total_seconds() / 86400.0


@dataclass(frozen=True, slots=True)
class Timeline:
    """The shared x axis of every chart: origin (day 0), label and visible domain."""

    origin: datetime
    label: str
    domain: tuple[float, float]
    post_infusion: bool


def timeline(result: EvaluationResult) -> Timeline:
    """Day 0 is the infusion; without one, the evaluation instant (days before it are negative)."""
    infusion = result.therapy.infusion_time
    origin = infusion or result.at
    label = "Days post-infusion" if infusion else "Days before the evaluation instant (no infusion on record)"
    end = day_of(result.at, origin)
    times = [lab.time for series in result.labs.values() for lab in series]
    start = min((day_of(t, origin) for t in times), default=end - 7.0)
    start = max(min(start, 0.0 if infusion else start), end - MAX_SPAN_DAYS)
    ticks = day_ticks((start, end))
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    return Timeline(origin, label, (float(start // step * step), end + 0.25), infusion is not None)


def _series(kb: Knowledge, analyte: str, values: tuple[LabValue, ...], axis: Timeline) -> Series:
    points = tuple(
        Point(day_of(v.time, axis.origin), v.value, fmt_time(v.time), _flag(v))
        for v in values
        if day_of(v.time, axis.origin) >= axis.domain[0]
    )
    return Series(analyte, kb.display(analyte), points)


def _flag(value: LabValue) -> str:
    if value.high is not None and value.value > value.high:
        return "H"
    if value.low is not None and value.value < value.low:
        return "L"
    return ""


def reference_limit(kb: Knowledge, analyte: str, values: tuple[LabValue, ...], high: bool) -> float | None:
    """The latest observation's own limit; the fallback table's when no observation carries one."""
    for value in reversed(values):
        limit = value.high if high else value.low
        if limit is not None:
            return limit
    low, upper = kb.ranges.get(analyte, (None, None))
    return upper if high else low


def _reference_lines(kb: Knowledge, definition: ChartDef, result: EvaluationResult) -> list[RefLine]:
    lines = threshold_lines(kb, definition)
    for analyte in definition.analytes:
        values = result.labs.get(analyte, ())
        name = kb.display(analyte) if len(definition.analytes) > 1 else ""
        uln = reference_limit(kb, analyte, values, high=True)
        lln = reference_limit(kb, analyte, values, high=False)
        if definition.uln and uln is not None:
            lines.append(RefLine(uln, f"{name} ULN {fmt_number(uln)}".strip(), "uln"))
        if definition.lln and lln is not None:
            lines.append(RefLine(lln, f"{name} LLN {fmt_number(lln)}".strip(), "lln"))
        for ref in definition.uln_multiples:
            if uln is not None:
                symbol, multiple = uln_multiple(kb, ref)
                label = f"{ref.label} {name} {symbol} {multiple:g}×ULN ({fmt_number(multiple * uln)})"
                lines.append(RefLine(multiple * uln, " ".join(label.split()), "threshold"))
    return lines


def crs_bands(result: EvaluationResult, axis: Timeline) -> tuple[Band, ...]:
    """CRS episodes as shaded periods; an episode without abatement runs to the evaluation instant. Each
    calendar day inside an episode is coloured by that day's ASTCT 2019 grade (the CRS instrument)."""
    days = ASTCT_CRS.result(result.instruments).grade_by_day if "astct_crs" in result.instruments else ()
    bands = []
    for episode in result.crs:
        if episode.onset is None:
            continue
        end = episode.abatement or result.at
        grade = f" grade {episode.max_grade}" if episode.max_grade is not None else ""
        label = f"CRS{grade} ({episode.status})"
        start_day, end_day = day_of(episode.onset, axis.origin), day_of(end, axis.origin)
        segments = []
        for day in days:
            midnight = datetime.fromisoformat(day.date).replace(tzinfo=UTC)
            first, last = day_of(midnight, axis.origin), day_of(midnight + timedelta(days=1), axis.origin)
            first, last = max(first, start_day), min(last, end_day)
            if day.grade > 0 and first < last:
                segments.append((first, last, day.grade))
        bands.append(
            Band(start_day, end_day, label, open_ended=episode.abatement is None, grades=tuple(segments))
        )
    return tuple(bands)


def drug_markers(result: EvaluationResult, axis: Timeline) -> tuple[Marker, ...]:
    return tuple(
        Marker(
            day_of(drug.time, axis.origin),
            f"{drug.text} ({drug.drug_class.replace('_', ' ')})",
            DRUG_SYMBOLS.get(drug.drug_class, drug.drug_class[:2].title()),
            drug.drug_class,
            fmt_time(drug.time),
        )
        for drug in result.drugs
    )


def build_charts(kb: Knowledge, result: EvaluationResult) -> list[Chart]:
    """One chart per definition, all on the same x axis, with CRS bands and drug markers."""
    axis = timeline(result)
    bands, markers = crs_bands(result, axis), drug_markers(result, axis)
    events = [EventLine(day_of(result.at, axis.origin), f"Evaluation instant {fmt_time(result.at)}", "at")]
    if axis.post_infusion:
        events.append(EventLine(0.0, "Infusion (day 0)", "infusion"))
    charts = []
    for definition in CHART_DEFS:
        series = tuple(_series(kb, a, result.labs.get(a, ()), axis) for a in definition.analytes)
        units = {kb.analytes[a]["canonical_unit"] for a in definition.analytes}
        charts.append(
            Chart(
                id=definition.id,
                title=definition.title,
                unit=", ".join(sorted(fmt_unit(u) for u in units)),
                x_label=axis.label,
                x_domain=axis.domain,
                log_y=definition.log_y,
                series=series,
                lines=tuple(_reference_lines(kb, definition, result)),
                bands=bands,
                markers=markers,
                events=tuple(events),
            )
        )
    return charts
