"""The report's charts as inline SVG (no scripts, no network): status swimlanes and bar histograms.

Every drawn element carries its data as ``data-*`` attributes and a ``<title>`` tooltip, so a test (or a
reader with a screen reader) can check the picture against the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from cds_service.replay.groups import PatientSummary
from cds_service.replay.labels import Label
from cds_service.smart.charts.svg import element, num, tooltip

STATUSES = ("met", "possible", "indeterminate", "not-met", "not-applicable")
LANE_H, LANE_GAP, LABEL_W, PLOT_W, TOP, AXIS_H = 9.0, 3.0, 120.0, 760.0, 8.0, 28.0


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    count: int
    detail: str = ""


def _svg(width: float, height: float, title: str, body: str, css: str) -> str:
    attrs: dict[str, str | float] = {
        "xmlns": "http://www.w3.org/2000/svg",
        "class": css,
        "viewBox": f"0 0 {num(width)} {num(height)}",
        "width": width,
        "height": height,
        "role": "img",
    }
    return element("svg", attrs, f"<title>{escape(title)}</title>{body}")


def _day_axis(days: float, y: float) -> str:
    step = max(1, math.ceil(days / 12 / 7) * 7) if days > 28 else max(1, math.ceil(days / 14))
    out = []
    for day in range(0, int(days) + 1, step):
        x = LABEL_W + day / days * PLOT_W
        out.append(element("line", {"class": "tick", "x1": x, "x2": x, "y1": TOP, "y2": y}))
        out.append(element("text", {"class": "tick-label", "x": x, "y": y + 12}, f"{day}"))
    out.append(
        element(
            "text", {"class": "axis-title", "x": LABEL_W + PLOT_W / 2, "y": y + 25}, "days after infusion"
        )
    )
    return "".join(out)


def lane_key(p: PatientSummary) -> tuple[int, float, str]:
    """Lane order: patients reaching met first (earliest first), then possible, then the rest; by id."""
    if p.first_met is not None:
        return 0, (p.first_met - p.infusion).total_seconds(), p.patient_id
    if p.first_possible is not None:
        return 1, (p.first_possible - p.infusion).total_seconds(), p.patient_id
    return 2, 0.0, p.patient_id


def swimlanes(patients: Sequence[PatientSummary], labels: dict[str, Label] | None, days: float) -> str:
    """One lane per patient: the IEC-HS status over days after infusion; a mark at the labelled onset."""
    days = max(days, 1.0)
    scale = PLOT_W / days
    lanes = []
    for row, p in enumerate(patients):
        y = TOP + row * (LANE_H + LANE_GAP)
        parts = [
            element(
                "text", {"class": "lane-label", "x": LABEL_W - 6, "y": y + LANE_H - 1}, escape(p.patient_id)
            )
        ]
        for start, end, status in p.segments:
            x0, x1 = LABEL_W + min(start, days) * scale, LABEL_W + min(end, days) * scale
            attrs: dict[str, str | float] = {
                "class": f"seg s-{status}",
                "x": x0,
                "y": y,
                "width": max(x1 - x0, 0.5),
                "height": LANE_H,
            }
            attrs |= {"data-status": status, "data-from": round(start, 2), "data-to": round(end, 2)}
            parts.append(
                element("rect", attrs, tooltip(f"{p.patient_id}: {status}, day {start:.1f}-{end:.1f}"))
            )
        label = labels.get(p.patient_id) if labels else None
        if label is not None:
            day = (label.onset - p.infusion).total_seconds() / 86400
            x = LABEL_W + min(max(day, 0.0), days) * scale
            onset = element(
                "path", {"class": "onset", "d": f"M{num(x)} {num(y - 1)}l-3 -3h6z", "data-day": round(day, 2)}
            )
            parts.append(element("g", {}, onset + tooltip(f"labelled onset: day {day:.1f}")))
        lanes.append(element("g", {"class": "lane", "data-patient": p.patient_id}, "".join(parts)))
    height = TOP + len(patients) * (LANE_H + LANE_GAP) + AXIS_H + 8
    body = _day_axis(days, height - AXIS_H - 4) + "".join(lanes)
    return _svg(
        LABEL_W + PLOT_W + 20, height, "IEC-HS status per patient over days after infusion", body, "lanes"
    )


def bars(values: Sequence[Bar], title: str, x_title: str, css: str) -> str:
    """A bar chart (counts) with one labelled bar per value."""
    width, height, left, bottom, top = 560.0, 220.0, 44.0, 40.0, 10.0
    peak = max((b.count for b in values), default=0) or 1
    slot = (width - left - 10) / max(len(values), 1)
    plot_h = height - bottom - top
    parts = [
        element(
            "line", {"class": "axis", "x1": left, "x2": width - 10, "y1": top + plot_h, "y2": top + plot_h}
        )
    ]
    for tick in sorted({0, peak // 2, peak}):
        y = top + plot_h - tick / peak * plot_h
        parts.append(element("text", {"class": "tick-label y", "x": left - 6, "y": y + 4}, f"{tick:,}"))
    every = max(1, math.ceil(len(values) / 14))
    for index, bar in enumerate(values):
        h = bar.count / peak * plot_h
        x = left + index * slot
        attrs: dict[str, str | float] = {
            "class": "bar",
            "x": x + 1,
            "y": top + plot_h - h,
            "width": max(slot - 2, 1),
            "height": h,
        }
        attrs |= {"data-label": bar.label, "data-count": bar.count}
        parts.append(element("rect", attrs, tooltip(f"{bar.label}: {bar.count:,}{bar.detail}")))
        if index % every == 0:
            parts.append(
                element(
                    "text",
                    {"class": "tick-label", "x": x + slot / 2, "y": top + plot_h + 14},
                    escape(bar.label),
                )
            )
    parts.append(
        element(
            "text", {"class": "axis-title", "x": left + (width - left) / 2, "y": height - 6}, escape(x_title)
        )
    )
    return _svg(width, height, title, "".join(parts), f"bars {css}")


def lead_time_bars(hours: Sequence[float], bin_hours: int = 24) -> list[Bar]:
    """Lead times binned by `bin_hours` (bins from the earliest to the latest value)."""
    if not hours:
        return []
    low = math.floor(min(hours) / bin_hours)
    high = math.floor(max(hours) / bin_hours)
    counts = {b: 0 for b in range(low, high + 1)}
    for h in hours:
        counts[math.floor(h / bin_hours)] += 1
    return [
        Bar(f"{b * bin_hours:+d}", n, f" patients from {b * bin_hours:+d} h to {(b + 1) * bin_hours:+d} h")
        for b, n in counts.items()
    ]


def card_day_bars(counts: Sequence[int]) -> list[Bar]:
    """Patient-days by the number of distinct cards shown that day (`counts`: days with 0, 1, 2, 3+)."""
    return [Bar(label, n, " patient-days") for label, n in zip(("0", "1", "2", "3+"), counts, strict=True)]


def cards_by_day_bars(totals: Sequence[int]) -> list[Bar]:
    """Cards shown on each day after infusion, summed over patients."""
    return [Bar(str(day), n, " cards") for day, n in enumerate(totals)]
