"""A ferritin sparkline as inline SVG (no script, no external asset: the page's CSP allows inline SVG)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 120.0, 28.0, 3.0


@dataclass(frozen=True, slots=True)
class Sparkline:
    points: str  # the polyline's points attribute ("" without data)
    last_x: float
    last_y: float
    label: str  # the accessible description: trend and last value

    @property
    def empty(self) -> bool:
        return not self.points


def sparkline(series: Sequence[tuple[float, float]]) -> Sparkline:
    """Scale (time, value) pairs into the box; the label names the trend in words."""
    if not series:
        return Sparkline("", 0.0, 0.0, "no ferritin results")
    times, values = [t for t, _ in series], [v for _, v in series]
    t0, t1 = min(times), max(times)
    v0, v1 = min(values), max(values)
    span_t, span_v = (t1 - t0) or 1.0, (v1 - v0) or 1.0

    def x(t: float) -> float:
        return round(PAD + (t - t0) / span_t * (WIDTH - 2 * PAD), 1)

    def y(v: float) -> float:
        return round(HEIGHT - PAD - (v - v0) / span_v * (HEIGHT - 2 * PAD), 1)

    points = " ".join(f"{x(t)},{y(v)}" for t, v in series)
    return Sparkline(points, x(times[-1]), y(values[-1]), _label(values))


def _label(values: Sequence[float]) -> str:
    last = values[-1]
    if len(values) == 1:
        trend = "one result"
    elif last > values[-2] * 1.1:
        trend = "rising"
    elif last < values[-2] * 0.9:
        trend = "falling"
    else:
        trend = "steady"
    return f"ferritin {trend}, last {last:,.0f} ng/mL ({len(values)} results)"
