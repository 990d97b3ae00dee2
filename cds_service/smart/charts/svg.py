"""Renders a :class:`~cds_service.smart.charts.model.Chart` as a standalone, accessible SVG string.

No scripts and no inline styles (the dashboard's Content-Security-Policy forbids both): every element has
a class that dashboard.css styles. Geometry is exposed as ``data-*`` attributes (the data value behind a
line or point) next to the drawn coordinates, so tests and assistive tooling can check one against the
other. The SVG has ``role="img"`` with a ``<title>`` and a ``<desc>``; each point, line, band and marker
carries its own ``<title>`` (a tooltip on hover, read by screen readers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape

from cds_service.smart.charts.model import Band, Chart, Layout, Marker, RefLine, Series
from cds_service.smart.charts.scales import (
    LinearScale,
    LogScale,
    Scale,
    day_ticks,
    linear_domain,
    log_domain,
    spread_labels,
)

SVG_NS = "http://www.w3.org/2000/svg"
Attrs = dict[str, str | float]
LABEL_SEPARATOR = " · "  # joins the labels of cut-offs that share one value
_MARKER_LETTER_GAP = 12.0  # px: a repeated symbol closer than this to the previous one is not re-labelled


def num(value: float) -> str:
    """A compact coordinate/value string: at most 2 decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def tick_label(value: float) -> str:
    """Axis label: thousands separators, no needless decimals."""
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def element(tag: str, attrs: Mapping[str, str | float], children: str = "") -> str:
    """One SVG element with escaped attribute values (numbers go through :func:`num`)."""
    rendered = " ".join(
        f'{key}="{escape(num(value) if isinstance(value, float | int) else value, quote=True)}"'
        for key, value in attrs.items()
    )
    opening = f"<{tag} {rendered}" if rendered else f"<{tag}"
    return f"{opening}>{children}</{tag}>" if children else f"{opening}/>"


def tooltip(text: str) -> str:
    return f"<title>{escape(text)}</title>"


@dataclass(frozen=True, slots=True)
class Frame:
    """The scales and pixel box of one rendered chart."""

    layout: Layout
    x: LinearScale
    y: Scale


def make_frame(chart: Chart, layout: Layout) -> Frame:
    """Scales for `chart`: the y domain covers every value and every reference line."""
    ys = [p.y for s in chart.series for p in s.points] + [line.y for line in chart.lines]
    y_range = (layout.plot_bottom, layout.plot_top)
    y: Scale
    if chart.log_y:
        y = LogScale(log_domain(ys), y_range)
    else:
        y = LinearScale(linear_domain(ys), y_range)
    x = LinearScale(chart.x_domain, (layout.plot_left, layout.plot_right))
    return Frame(layout, x, y)


def render(chart: Chart, layout: Layout | None = None, *, description: str = "") -> str:
    """The chart as an ``<svg>`` element string (scales to its container via viewBox)."""
    frame = make_frame(chart, layout or Layout())
    lay = frame.layout
    parts = [
        element("title", {"id": f"{chart.id}-title"}, escape(f"{chart.title} ({chart.unit})")),
        element("desc", {"id": f"{chart.id}-desc"}, escape(description or chart.title)),
        _plot_background(lay),
        _bands(chart.bands, frame),
        _y_axis(frame, chart),
        _x_axis(frame, chart),
        _events(chart, frame),
        _ref_lines(chart.lines, frame),
        *(_series(series, index, frame) for index, series in enumerate(chart.series)),
        _markers(chart.markers, frame),
    ]
    attrs: dict[str, str | float] = {
        "xmlns": SVG_NS,
        "viewBox": f"0 0 {num(lay.width)} {num(lay.height)}",
        "role": "img",
        "aria-labelledby": f"{chart.id}-title {chart.id}-desc",
        "class": f"chart {'chart-log' if chart.log_y else 'chart-linear'}",
        "id": f"chart-{chart.id}",
        "data-scale": "log" if chart.log_y else "linear",
        "data-x-domain": f"{num(frame.x.domain[0])} {num(frame.x.domain[1])}",
        "data-y-domain": f"{num(frame.y.domain[0])} {num(frame.y.domain[1])}",
        "data-plot": f"{num(lay.plot_left)} {num(lay.plot_top)} {num(lay.plot_right)} {num(lay.plot_bottom)}",
    }
    return element("svg", attrs, "".join(parts))


def _plot_background(lay: Layout) -> str:
    return element(
        "rect",
        {
            "class": "plot-area",
            "x": lay.plot_left,
            "y": lay.plot_top,
            "width": lay.plot_right - lay.plot_left,
            "height": lay.plot_bottom - lay.plot_top,
        },
    )


def _clamp_x(frame: Frame, value: float) -> float:
    return min(max(frame.x(value), frame.layout.plot_left), frame.layout.plot_right)


def _bands(bands: Iterable[Band], frame: Frame) -> str:
    out = []
    for band in bands:
        x0, x1 = _clamp_x(frame, band.start), _clamp_x(frame, band.end)
        if x1 <= x0:
            continue
        rect = element(
            "rect",
            {
                "class": "crs-band",
                "x": x0,
                "y": frame.layout.plot_top,
                "width": x1 - x0,
                "height": frame.layout.plot_bottom - frame.layout.plot_top,
                "data-start": band.start,
                "data-end": band.end,
            },
            tooltip(band.label),
        )
        for start, end, grade in band.grades:
            d0, d1 = _clamp_x(frame, start), _clamp_x(frame, end)
            if d1 > d0:
                rect += element(
                    "rect",
                    {
                        "class": f"crs-day crs-grade-{grade}",
                        "x": d0,
                        "y": frame.layout.plot_bottom - 6,
                        "width": d1 - d0,
                        "height": 6,
                        "data-grade": grade,
                    },
                    tooltip(f"CRS grade {grade} (ASTCT 2019) that day"),
                )
        label = element(
            "text", {"class": "band-label", "x": x0 + 3, "y": frame.layout.plot_top + 11}, escape(band.label)
        )
        out.append(element("g", {"class": "band"}, rect + label))
    return element("g", {"class": "bands"}, "".join(out)) if out else ""


def _y_axis(frame: Frame, chart: Chart) -> str:
    lay = frame.layout
    parts = []
    for value in frame.y.ticks():
        y = frame.y(value)
        parts.append(
            element("line", {"class": "grid", "x1": lay.plot_left, "x2": lay.plot_right, "y1": y, "y2": y})
        )
        parts.append(
            element(
                "text",
                {"class": "tick-label y-tick", "x": lay.plot_left - 6, "y": y + 4, "data-value": value},
                escape(tick_label(value)),
            )
        )
    unit = f"{chart.unit}{' (log scale)' if chart.log_y else ''}"
    middle = (lay.plot_top + lay.plot_bottom) / 2
    title_attrs: dict[str, str | float] = {"class": "axis-title y-title", "x": 0, "y": 0}
    title_attrs["transform"] = f"translate(12 {num(middle)}) rotate(-90)"
    parts.append(element("text", title_attrs, escape(unit)))
    return element("g", {"class": "y-axis"}, "".join(parts))


def _x_axis(frame: Frame, chart: Chart) -> str:
    lay = frame.layout
    axis: Attrs = {
        "class": "axis",
        "x1": lay.plot_left,
        "x2": lay.plot_right,
        "y1": lay.plot_bottom,
        "y2": lay.plot_bottom,
    }
    parts = [element("line", axis)]
    parts += [_day_tick(frame, day) for day in day_ticks(frame.x.domain)]
    title_x = (lay.plot_left + lay.plot_right) / 2
    title: Attrs = {"class": "axis-title x-title", "x": title_x, "y": lay.height - 6}
    parts.append(element("text", title, escape(chart.x_label)))
    return element("g", {"class": "x-axis"}, "".join(parts))


def _day_tick(frame: Frame, day: int) -> str:
    x, bottom = frame.x(day), frame.layout.plot_bottom
    tick = element("line", {"class": "tick", "x1": x, "x2": x, "y1": bottom, "y2": bottom + 5})
    label_attrs: dict[str, str | float] = {
        "class": "tick-label x-tick",
        "x": x,
        "y": bottom + 17,
        "data-day": day,
    }
    return tick + element("text", label_attrs, escape(str(day)))


def _events(chart: Chart, frame: Frame) -> str:
    out = []
    for event in chart.events:
        if not frame.x.domain[0] <= event.x <= frame.x.domain[1]:
            continue
        x = frame.x(event.x)
        attrs: dict[str, str | float] = {
            "class": f"event event-{event.kind}",
            "x1": x,
            "x2": x,
            "data-x": event.x,
        }
        attrs.update({"y1": frame.layout.plot_top, "y2": frame.layout.plot_bottom})
        out.append(element("line", attrs, tooltip(event.label)))
    return element("g", {"class": "events"}, "".join(out)) if out else ""


def _ref_lines(lines: tuple[RefLine, ...], frame: Frame) -> str:
    lay = frame.layout
    ys = [frame.y(line.y) for line in lines]
    # Cut-offs of several instruments at one value share a line; their labels stack one per row.
    texts = [line.label.split(LABEL_SEPARATOR) for line in lines]
    label_ys = spread_labels(ys, lay.label_gap, lay.plot_top + 4, lay.plot_bottom, [len(t) for t in texts])
    out = []
    for line, y, label_y, rows in zip(lines, ys, label_ys, texts, strict=True):
        drawn = element(
            "line",
            {"class": f"ref ref-{line.kind}", "x1": lay.plot_left, "x2": lay.plot_right, "y1": y, "y2": y},
            tooltip(line.label),
        )
        spans = "".join(
            element("tspan", {"x": lay.plot_right + 4, "y": label_y + 3.5 + i * lay.label_gap}, escape(row))
            for i, row in enumerate(rows)
        )
        label = element("text", {"class": f"ref-label ref-label-{line.kind}"}, spans)
        attrs: dict[str, str | float] = {"class": "ref-line", "data-value": line.y, "data-kind": line.kind}
        out.append(element("g", attrs, drawn + label))
    return element("g", {"class": "ref-lines"}, "".join(out)) if out else ""


def _series(series: Series, index: int, frame: Frame) -> str:
    coords = [(frame.x(p.x), frame.y(p.y)) for p in series.points]
    path = " ".join(f"{num(x)},{num(y)}" for x, y in coords)
    parts = [element("polyline", {"class": "trend", "points": path})] if len(coords) > 1 else []
    for point, (x, y) in zip(series.points, coords, strict=True):
        text = tooltip(f"{series.label} {tick_label(point.y)} on day {num(point.x)} ({point.when})")
        attrs: dict[str, str | float] = {"class": "point", "data-x": point.x, "data-y": point.y}
        if index % 2:  # the second series of a chart (ALT) uses squares: not told apart by colour alone
            attrs.update({"x": x - 3.2, "y": y - 3.2, "width": 6.4, "height": 6.4})
            parts.append(element("rect", attrs, text))
        else:
            attrs.update({"cx": x, "cy": y, "r": 3.4})
            parts.append(element("circle", attrs, text))
    return element("g", {"class": f"series series-{index}", "data-series": series.key}, "".join(parts))


def _markers(markers: tuple[Marker, ...], frame: Frame) -> str:
    lay = frame.layout
    out = []
    last_x: dict[str, float] = {}
    for marker in sorted(markers, key=lambda m: m.x):
        if not frame.x.domain[0] <= marker.x <= frame.x.domain[1]:
            continue
        x = frame.x(marker.x)
        top = lay.plot_top - 4
        guide = element("line", {"class": "marker-guide", "x1": x, "x2": x, "y1": top, "y2": lay.plot_bottom})
        triangle = element("path", {"class": "marker-symbol", "d": f"M{num(x - 4)},{num(top - 7)}h8l-4,7z"})
        letter = ""
        if x - last_x.get(marker.kind, -1e9) >= _MARKER_LETTER_GAP:
            letter = element("text", {"class": "marker-letter", "x": x, "y": top - 10}, escape(marker.symbol))
            last_x[marker.kind] = x
        attrs: dict[str, str | float] = {
            "class": f"marker marker-{marker.kind}",
            "data-x": marker.x,
            "data-kind": marker.kind,
        }
        out.append(
            element(
                "g",
                attrs,
                tooltip(f"{marker.label}, day {num(marker.x)} ({marker.when})") + guide + triangle + letter,
            )
        )
    return element("g", {"class": "markers"}, "".join(out)) if out else ""
