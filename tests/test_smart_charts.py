"""The dashboard's SVG chart module: scales, axes in days, threshold lines, CRS shading, drug markers.

Geometry is checked against formulas written here from the plot box and domains the SVG exposes
(``data-plot``, ``data-x-domain``, ``data-y-domain``), never against a stored snapshot of the output.
Threshold lines are checked against the knowledge base, including a modified copy of mappings/.
"""

from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from cds_service.engine import evaluate
from cds_service.engine.instruments.registry import ASTCT_CRS
from cds_service.engine.knowledge import Knowledge, load_knowledge
from cds_service.engine.model import EvaluationResult
from cds_service.smart.charts.defs import CHART_DEFS
from cds_service.smart.charts.model import Band, Chart, EventLine, Layout, Marker, Point, RefLine, Series
from cds_service.smart.charts.panels import build_charts, threshold_lines
from cds_service.smart.charts.scales import LinearScale, LogScale, day_ticks, spread_labels
from cds_service.smart.charts.svg import render
from cds_service.smart.charts.text import describe, rows

NS = {"s": "http://www.w3.org/2000/svg"}
REPO = Path(__file__).resolve().parents[1]
CLASSIC = REPO / "fixtures" / "scenarios" / "classic-iec-hs.json"
CLASSIC_AT = datetime.fromisoformat("2026-03-15T20:00:00+00:00")


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


class Geometry:
    """Expected pixel positions, computed from what the SVG says about its box and domains."""

    def __init__(self, root: ET.Element) -> None:
        self.left, self.top, self.right, self.bottom = floats(root.attrib["data-plot"])
        self.x0, self.x1 = floats(root.attrib["data-x-domain"])
        self.y0, self.y1 = floats(root.attrib["data-y-domain"])
        self.log = root.attrib["data-scale"] == "log"

    def x(self, day: float) -> float:
        return self.left + (day - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, value: float) -> float:
        if self.log:
            frac = (math.log10(value) - math.log10(self.y0)) / (math.log10(self.y1) - math.log10(self.y0))
        else:
            frac = (value - self.y0) / (self.y1 - self.y0)
        return self.bottom - frac * (self.bottom - self.top)


def ferritin_chart(**overrides: object) -> Chart:
    values = [(-5.0, 400.0), (0.0, 350.0), (3.0, 2500.0), (9.0, 1200.0), (13.0, 25000.0)]
    base: dict[str, object] = {
        "id": "ferritin",
        "title": "Ferritin",
        "unit": "ng/mL",
        "x_label": "Days post-infusion",
        "x_domain": (-6.0, 14.0),
        "log_y": True,
        "series": (Series("ferritin", "Ferritin", tuple(Point(x, y, f"t{x}") for x, y in values)),),
        "lines": (
            RefLine(300.0, "ULN 300", "uln"),
            RefLine(500.0, "HLH-2004 ≥ 500", "threshold"),
            RefLine(600.0, "IEC-HS > 2×ULN (600)", "threshold"),
            RefLine(10000.0, "CARTOX > 10,000", "threshold"),
        ),
        "bands": (Band(1.2, 5.1, "CRS grade 2 (resolved)"),),
        "markers": (
            Marker(2.2, "tocilizumab", "T", "tocilizumab", "d2"),
            Marker(11.9, "anakinra", "A", "anakinra", "d11.9"),
            Marker(12.1, "anakinra", "A", "anakinra", "d12.1"),
        ),
        "events": (EventLine(0.0, "Infusion (day 0)", "infusion"),),
    }
    base.update(overrides)
    return Chart(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------ scales


def test_log_scale_maps_equal_ratios_to_equal_distances() -> None:
    scale = LogScale((10.0, 100000.0), (300.0, 30.0))
    steps = [scale(10.0**k) - scale(10.0 ** (k + 1)) for k in range(1, 5)]
    assert steps == pytest.approx([steps[0]] * 4)
    assert scale(10.0) == pytest.approx(300.0)
    assert scale(100000.0) == pytest.approx(30.0)
    assert scale(math.sqrt(10.0) * 100) == pytest.approx((scale(100.0) + scale(1000.0)) / 2)


def test_log_scale_rejects_non_positive_domain_and_ticks_decades() -> None:
    with pytest.raises(ValueError):
        LogScale((0.0, 10.0), (0.0, 1.0))
    assert LogScale((10.0, 100000.0), (0.0, 1.0)).ticks() == [10.0, 100.0, 1000.0, 10000.0, 100000.0]
    assert LogScale((100.0, 1000.0), (0.0, 1.0)).ticks() == [100.0, 200.0, 500.0, 1000.0]


def test_linear_scale_ticks_are_round_and_inside_the_domain() -> None:
    scale = LinearScale((0.0, 600.0), (300.0, 30.0))
    assert scale.ticks() == [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    assert scale(300.0) == pytest.approx(165.0)


def test_day_ticks_are_whole_days_and_include_day_zero() -> None:
    assert day_ticks((-6.0, 14.0)) == [-6, -4, -2, 0, 2, 4, 6, 8, 10, 12, 14]
    assert day_ticks((-3.5, 5.5)) == [-3, -2, -1, 0, 1, 2, 3, 4, 5]
    assert day_ticks((-10.0, 80.0)) == [0, 14, 28, 42, 56, 70]


def test_spread_labels_keeps_order_and_gap_within_bounds() -> None:
    placed = spread_labels([100.0, 103.0, 101.0, 250.0], 11.0, 30.0, 260.0)
    ordered = sorted(placed)
    assert [placed.index(v) for v in ordered] == [0, 2, 1, 3]
    assert all(b - a >= 11.0 - 1e-9 for a, b in zip(ordered, ordered[1:], strict=False))
    bottom = spread_labels([255.0, 258.0], 11.0, 30.0, 260.0, lines=[1, 2])
    assert bottom[1] + 11.0 <= 260.0 + 1e-9 and bottom[1] - bottom[0] >= 11.0 - 1e-9


# ------------------------------------------------------------------ rendered SVG


def test_log_axis_ticks_are_evenly_spaced_decades() -> None:
    root = parse(render(ferritin_chart()))
    geo = Geometry(root)
    assert geo.log and geo.y0 == 100 and geo.y1 == 100000
    ticks = {
        float(t.attrib["data-value"]): float(t.attrib["y"])
        for t in root.iterfind(".//s:text", NS)
        if "y-tick" in t.attrib.get("class", "")
    }
    assert {100.0, 1000.0, 10000.0, 100000.0} <= set(ticks)
    assert all(round(v / 10 ** math.floor(math.log10(v)), 9) in (1, 2, 5) for v in ticks)
    gaps = [ticks[10.0**k] - ticks[10.0 ** (k + 1)] for k in (2, 3, 4)]
    assert gaps == pytest.approx([gaps[0]] * 3)
    y_title = next(t for t in root.iterfind(".//s:text", NS) if "y-title" in t.attrib["class"])
    assert y_title.text == "ng/mL (log scale)"


def test_points_sit_at_their_day_and_value() -> None:
    chart = ferritin_chart()
    root = parse(render(chart))
    geo = Geometry(root)
    circles = root.findall(".//s:g[@data-series='ferritin']/s:circle", NS)
    assert len(circles) == len(chart.series[0].points)
    for circle, point in zip(circles, chart.series[0].points, strict=True):
        assert float(circle.attrib["cx"]) == pytest.approx(geo.x(point.x), abs=0.01)
        assert float(circle.attrib["cy"]) == pytest.approx(geo.y(point.y), abs=0.01)
        assert circle.find("s:title", NS) is not None


def test_x_axis_is_in_days_with_the_infusion_at_day_zero() -> None:
    root = parse(render(ferritin_chart()))
    geo = Geometry(root)
    ticks = [t for t in root.iterfind(".//s:text", NS) if "x-tick" in t.attrib.get("class", "")]
    assert [t.text for t in ticks] == ["-6", "-4", "-2", "0", "2", "4", "6", "8", "10", "12", "14"]
    for tick in ticks:
        assert float(tick.attrib["x"]) == pytest.approx(geo.x(float(tick.attrib["data-day"])), abs=0.01)
    infusion = root.find(".//s:line[@class='event event-infusion']", NS)
    assert infusion is not None and float(infusion.attrib["x1"]) == pytest.approx(geo.x(0.0), abs=0.01)
    x_title = next(t for t in root.iterfind(".//s:text", NS) if "x-title" in t.attrib["class"])
    assert x_title.text == "Days post-infusion"


def test_threshold_lines_are_horizontal_at_their_value_with_labels_apart() -> None:
    chart = ferritin_chart()
    root = parse(render(chart))
    geo = Geometry(root)
    groups = root.findall(".//s:g[@class='ref-line']", NS)
    assert [float(g.attrib["data-value"]) for g in groups] == [line.y for line in chart.lines]
    label_ys = []
    for group in groups:
        line = group.find("s:line", NS)
        assert line is not None
        assert line.attrib["y1"] == line.attrib["y2"]
        assert float(line.attrib["y1"]) == pytest.approx(geo.y(float(group.attrib["data-value"])), abs=0.01)
        assert float(line.attrib["x1"]) == geo.left and float(line.attrib["x2"]) == geo.right
        label_ys += [float(span.attrib["y"]) for span in group.iterfind(".//s:tspan", NS)]
    label_ys.sort()
    assert all(b - a >= Layout().label_gap - 0.01 for a, b in zip(label_ys, label_ys[1:], strict=False))
    kinds = {g.attrib["data-kind"] for g in groups}
    assert kinds == {"uln", "threshold"}


def test_shared_threshold_labels_stack_one_per_row() -> None:
    chart = ferritin_chart(lines=(RefLine(150.0, "IEC-HS < 150 · HLH-2004 ≤ 150", "threshold"),), log_y=False)
    root = parse(render(chart))
    spans = root.findall(".//s:g[@class='ref-line']//s:tspan", NS)
    assert [s.text for s in spans] == ["IEC-HS < 150", "HLH-2004 ≤ 150"]
    assert float(spans[1].attrib["y"]) - float(spans[0].attrib["y"]) == pytest.approx(Layout().label_gap)


def test_crs_period_is_shaded_between_onset_and_abatement_and_clamped_to_the_plot() -> None:
    chart = ferritin_chart(bands=(Band(1.2, 5.1, "CRS grade 2"), Band(-20.0, -5.5, "earlier CRS")))
    root = parse(render(chart))
    geo = Geometry(root)
    rects = root.findall(".//s:rect[@class='crs-band']", NS)
    assert len(rects) == 2
    first, clamped = rects
    assert float(first.attrib["x"]) == pytest.approx(geo.x(1.2), abs=0.01)
    assert float(first.attrib["width"]) == pytest.approx(geo.x(5.1) - geo.x(1.2), abs=0.02)
    assert float(first.attrib["y"]) == geo.top
    assert float(first.attrib["height"]) == pytest.approx(geo.bottom - geo.top)
    assert float(clamped.attrib["x"]) == pytest.approx(geo.left)
    assert float(clamped.attrib["width"]) == pytest.approx(geo.x(-5.5) - geo.left, abs=0.02)


def test_drug_markers_point_at_their_day_and_repeat_letters_are_dropped() -> None:
    chart = ferritin_chart()
    root = parse(render(chart))
    geo = Geometry(root)
    markers = root.findall(".//s:g[@data-kind]", NS)
    markers = [m for m in markers if "marker" in m.attrib["class"]]
    assert [float(m.attrib["data-x"]) for m in markers] == [2.2, 11.9, 12.1]
    for marker in markers:
        path = marker.find("s:path", NS)
        assert path is not None
        # "M{x-4},{top}h8l-4,7z": the triangle's tip is 4 px right of its start, i.e. at x.
        start_x = float(path.attrib["d"][1:].split(",")[0])
        assert start_x + 4 == pytest.approx(geo.x(float(marker.attrib["data-x"])), abs=0.02)
        assert marker.find("s:title", NS) is not None
    letters = [m.find("s:text", NS) for m in markers]
    # Two anakinra doses 0.2 days apart are closer than the letter gap: only the first is lettered.
    assert [t.text if t is not None else None for t in letters] == ["T", "A", None]


def test_svg_is_an_accessible_image_and_escapes_text() -> None:
    chart = ferritin_chart(
        title="Ferritin <b>&", series=(Series("x", "<script>", (Point(1.0, 500.0, "t"),)),)
    )
    svg = render(chart, description="desc & more")
    assert "<script>" not in svg
    root = parse(svg)
    assert root.attrib["role"] == "img"
    ids = root.attrib["aria-labelledby"].split()
    found = {el.attrib.get("id"): el for el in root}
    assert [found[i].tag for i in ids] == [f"{{{NS['s']}}}title", f"{{{NS['s']}}}desc"]
    assert found[ids[0]].text == "Ferritin <b>& (ng/mL)"
    assert found[ids[1]].text == "desc & more"


def test_text_alternative_lists_every_value() -> None:
    chart = ferritin_chart()
    table = rows(chart)
    assert [r.value for r in table] == [
        "400 ng/mL",
        "350 ng/mL",
        "2,500 ng/mL",
        "1,200 ng/mL",
        "25,000 ng/mL",
    ]
    text = describe(chart)
    assert (
        "log scale" in text and "highest 25,000" in text and "CRS grade 2" in text and "anakinra x2" in text
    )


# ------------------------------------------------------------------ charts from the engine + knowledge base


@pytest.fixture(scope="module")
def classic() -> tuple[Knowledge, EvaluationResult]:
    kb = load_knowledge()
    bundle = json.loads(CLASSIC.read_text(encoding="utf-8"))
    return kb, evaluate(bundle, at=CLASSIC_AT, knowledge=kb)


def test_the_crs_band_is_coloured_by_each_day_s_astct_grade(
    classic: tuple[Knowledge, EvaluationResult],
) -> None:
    """Classic: CRS grade 2 (hypotension) from day 1; each calendar day in the band carries its grade."""
    kb, result = classic
    band = {c.id: c for c in build_charts(kb, result)}["ferritin"].bands[0]
    days = ASTCT_CRS.result(result.instruments).grade_by_day
    assert band.grades and {grade for _, _, grade in band.grades} == {d.grade for d in days if d.grade}
    assert all(band.start <= start < end <= band.end for start, end, _ in band.grades)
    assert max(grade for _, _, grade in band.grades) == 2
    root = parse(render({c.id: c for c in build_charts(kb, result)}["ferritin"]))
    strips = root.findall(".//s:rect[@data-grade]", NS)
    assert len(strips) == len(band.grades)
    assert {s.attrib["class"] for s in strips} <= {f"crs-day crs-grade-{g}" for g in range(1, 5)}
    assert "crs-day crs-grade-2" in {s.attrib["class"] for s in strips}


def test_classic_charts_cover_every_required_analyte(classic: tuple[Knowledge, EvaluationResult]) -> None:
    kb, result = classic
    charts = {c.id: c for c in build_charts(kb, result)}
    assert set(charts) == {
        "ferritin", "fibrinogen", "transaminases", "platelets", "anc",
        "hemoglobin", "triglycerides", "ldh", "temperature",
    }  # fmt: skip
    assert charts["ferritin"].log_y and not charts["fibrinogen"].log_y
    assert all(c.has_data for c in charts.values())
    assert [s.key for s in charts["transaminases"].series] == ["ast", "alt"]
    ferritin = charts["ferritin"]
    # Day 0 = the axicabtagene infusion (2026-03-02 10:00Z); the evaluation instant is 13.42 days later.
    assert ferritin.x_domain[1] == pytest.approx(13.4167 + 0.25, abs=1e-3)
    assert ferritin.bands[0].start == pytest.approx(30 / 24) and ferritin.bands[0].label.startswith("CRS")
    kinds = {m.kind for m in ferritin.markers}
    assert {"tocilizumab", "anakinra"} <= kinds
    # IEC-HS: ferritin > 2 x the observation's ULN (300 in the fixture).
    assert any(line.y == pytest.approx(600.0) and "IEC-HS" in line.label for line in ferritin.lines)
    assert any(line.kind == "uln" and line.y == 300.0 for line in ferritin.lines)


def test_threshold_values_come_from_the_knowledge_base(classic: tuple[Knowledge, EvaluationResult]) -> None:
    kb, _ = classic
    fibrinogen = next(d for d in CHART_DEFS if d.id == "fibrinogen")
    lines = threshold_lines(kb, fibrinogen)
    iec = kb.criteria["iec_hs"]["most_common"]["hypofibrinogenemia"]["threshold"]["value"]
    hscore_g_per_l = kb.criteria["hscore"]["variables"]["fibrinogen"]["bands"][0]["upper"]["value"]
    values = sorted(line.y for line in lines)
    assert values == pytest.approx(sorted({float(iec), hscore_g_per_l * 100}))  # g/L -> mg/dL
    shared = next(line for line in lines if line.y == pytest.approx(iec))
    assert "IEC-HS" in shared.label and "HLH-2004" in shared.label


def test_a_changed_criteria_file_moves_the_line(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    path = mappings / "criteria" / "cartox.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["ferritin"]["value"] = 12345
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    kb = load_knowledge(mappings)
    ferritin = next(d for d in CHART_DEFS if d.id == "ferritin")
    assert any(
        line.y == pytest.approx(12345.0) and "CARTOX" in line.label for line in threshold_lines(kb, ferritin)
    )
