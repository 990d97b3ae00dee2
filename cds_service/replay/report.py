"""report.html: one self-contained page (inline CSS and SVG, no script, no network) for a replay run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from cds_service.replay import charts
from cds_service.replay.groups import PatientSummary
from cds_service.replay.labels import Label, Metrics, lead_hours

LEAD_BIN_HOURS = 12
WARNING = "Silent mode, not for clinical use"
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232a;max-width:1000px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}
.silent{background:#fff3cd;border:1px solid #e0b100;padding:8px 12px;font-weight:600;margin:10px 0 18px}
table.numbers{border-collapse:collapse}
table.numbers td,table.numbers th{padding:3px 14px 3px 0;text-align:left}
table.numbers td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#56606b;font-size:13px}
svg text{font-size:10px;fill:#333}svg .lane-label{text-anchor:end;font-size:9px}
svg .tick{stroke:#e3e6ea}svg .tick-label{text-anchor:middle}svg .tick-label.y{text-anchor:end}
svg .axis{stroke:#888}svg .axis-title{text-anchor:middle;font-size:11px}
.s-met{fill:#c0392b}.s-possible{fill:#f0932b}.s-indeterminate{fill:#b8c2cc}.s-not-met{fill:#cfe8d5}
.s-not-applicable{fill:#eeeeee}svg .onset{fill:#111}svg .bar{fill:#3c6e9f}
.legend span{display:inline-block;width:12px;height:10px;margin:0 4px 0 12px;vertical-align:-1px}
.legend .l-met{background:#c0392b}.legend .l-possible{background:#f0932b}
.legend .l-indeterminate{background:#b8c2cc}
.legend .l-not-met{background:#cfe8d5}.legend .l-not-applicable{background:#eeeeee}
"""


@dataclass(frozen=True, slots=True)
class ReportData:
    lanes: Sequence[PatientSummary]  # the first patients in lane order (at most collect.MAX_LANES)
    flagged: Sequence[PatientSummary]  # the first patients reaching met, in lane order (as many at most)
    labels: dict[str, Label] | None
    metrics: Metrics | None
    summary: dict[str, Any]
    card_day_counts: tuple[int, ...]  # patient-days with 0, 1, 2, 3+ cards
    cards_by_day: tuple[int, ...]  # cards on each day after infusion


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _rows(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{escape(k)}</th><td class=n>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table class=numbers>{cells}</table>"


def _numbers(data: ReportData) -> str:
    s = data.summary
    days = s["patientDays"]
    rows = [
        ("Patients replayed (IEC infusion on record)", f"{s['patients']:,}"),
        ("Patients without an IEC infusion (not replayed)", f"{s['withoutInfusion']:,}"),
        ("Evaluations", f"{s['evaluations']:,}"),
        ('Patients reaching "possible" or "met"', f"{s['reachedPossible']:,}"),
        ('Patients reaching "met"', f"{s['reachedMet']:,}"),
        ("Cards shown (distinct per patient-day)", f"{s['cardsShown']:,}"),
        (
            "Cards per patient-day",
            f"{s['cardsShown'] / days:.2f} over {days:,} patient-days" if days else "-",
        ),
        ("Malformed lines skipped (problems.csv)", f"{s['malformedLines']:,}"),
        ("Resources without a patient reference", f"{sum(s['withoutPatient'].values()):,}"),
    ]
    m = data.metrics
    if m is not None:
        median = m.median_lead_hours
        rows += [
            ("Labelled patients replayed", f"{m.labelled:,} ({m.labelled_missing:,} labelled not replayed)"),
            ('Sensitivity (labelled reaching "met")', f"{_pct(m.sensitivity)} ({m.detected}/{m.labelled})"),
            ('PPV (labelled among "met")', f"{_pct(m.ppv)} ({m.flagged_labelled}/{m.flagged})"),
            ("Median lead time (first met - labelled onset)", "-" if median is None else f"{median:+.1f} h"),
        ]
    return _rows(rows)


def _settings(summary: dict[str, Any]) -> str:
    changed = ", ".join(summary["overrides"]) or "none (the mappings as shipped)"
    horizon = summary["horizonDays"]
    return (
        f"<p class=note>Evaluated at every data arrival and every {summary['stepHours']:g} h from infusion, "
        f"up to the end of the data{'' if horizon is None else f' or day {horizon}'}. Changed settings: "
        f"{escape(changed)}. Input: {escape(Path(summary['input']).name)}.</p>"
    )


def _lanes(data: ReportData) -> str:
    shown, total = data.lanes, data.summary["patients"]
    days = max((seg[1] for p in shown for seg in p.segments), default=1.0)
    legend = "".join(f"<span class=l-{s}></span>{s}" for s in charts.STATUSES)
    more = (
        f"<p class=note>Showing {len(shown):,} of {total:,} patients (those reaching met or possible "
        "first); every patient is in patients.csv and timeline.parquet.</p>"
        if total > len(shown)
        else ""
    )
    onset = " &#9660; labelled onset." if data.labels else ""
    return f"<p class=legend>{legend}{onset}</p>{more}{charts.swimlanes(shown, data.labels, days)}"


def _lead_times(data: ReportData) -> str:
    if data.metrics is None:
        return "<p class=note>No labels given (--labels CSV): no lead times.</p>"
    if not data.metrics.lead_hours:
        return '<p class=note>No labelled patient reached "met".</p>'
    bars = charts.lead_time_bars(data.metrics.lead_hours, LEAD_BIN_HOURS)
    note = (
        "<p class=note>First met minus labelled onset, hours (negative: before the onset), "
        f"{LEAD_BIN_HOURS} h bins.</p>"
    )
    return note + charts.bars(
        bars, "Lead time distribution", "hours from labelled onset to first met", "lead"
    )


def _alerts(data: ReportData) -> str:
    return (
        "<p class=note>A card counts once per patient-day (day after infusion) however often the chart is "
        "opened: the distinct cards the patient-view hook would have returned that day.</p>"
        + charts.bars(
            charts.card_day_bars(data.card_day_counts),
            "Patient-days by cards shown",
            "cards per patient-day",
            "per-day",
        )
        + charts.bars(
            charts.cards_by_day_bars(data.cards_by_day),
            "Cards shown by day",
            "day after infusion",
            "by-day",
        )
    )


def _flagged(data: ReportData) -> str:
    met = data.flagged
    if not met:
        return '<p class=note>No patient reached "met".</p>'
    columns = ("Patient", "First met (day)", "Max grade", "Labelled onset", "Lead time")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    rows = []
    for p in met:
        assert p.first_met is not None
        label = data.labels.get(p.patient_id) if data.labels else None
        lead = lead_hours(p, label)
        rows.append(
            f"<tr><td>{escape(p.patient_id)}</td>"
            f"<td>{(p.first_met - p.infusion).total_seconds() / 86400:.1f}</td>"
            f"<td>{'' if p.max_grade is None else p.max_grade}</td>"
            f"<td>{'' if label is None else label.onset.isoformat().replace('+00:00', 'Z')}</td>"
            f"<td>{'' if lead is None else f'{lead:+.1f} h'}</td></tr>"
        )
    return f"<table class='numbers flagged'>{head}{''.join(rows)}</table>"


def render_report(data: ReportData) -> str:
    sections = [
        f"<h1>IEC-HS replay: {escape(WARNING.lower())}</h1>",
        f"<div class=silent>{WARNING}. A retrospective replay of an export through the screening rule: "
        "what the rule would have shown, not what happened to any patient.</div>",
        _settings(data.summary),
        "<h2>Summary</h2>" + _numbers(data),
        "<h2>IEC-HS status over time</h2>" + _lanes(data),
        "<h2>Lead time</h2>" + _lead_times(data),
        "<h2>Alert burden</h2>" + _alerts(data),
        '<h2>Patients reaching "met"</h2>' + _flagged(data),
        f"<p class=note>{WARNING}.</p>",
    ]
    body = "\n".join(sections)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>IEC-HS replay ({WARNING.lower()})</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_report(path: Path, data: ReportData) -> None:
    path.write_text(render_report(data), encoding="utf-8")
