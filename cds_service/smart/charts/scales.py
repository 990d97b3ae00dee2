"""Linear and logarithmic scales with readable ticks, and the day axis.

A scale maps a data value to a pixel coordinate; `ticks()` returns the values to label. Domains are widened
to "nice" bounds (1, 2, 5 x 10^k for linear scales, whole decades for log scales) so tick labels are round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

_NICE_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)
_DAY_STEPS = (1, 2, 3, 7, 14, 28, 56, 91, 182, 365)


class Scale(Protocol):
    """Maps data values to pixels."""

    @property
    def domain(self) -> tuple[float, float]: ...

    def __call__(self, value: float) -> float: ...

    def ticks(self) -> list[float]: ...


def nice_step(span: float, max_ticks: int) -> float:
    """The smallest 1/2/2.5/5 x 10^k step that splits `span` into at most `max_ticks` intervals."""
    if span <= 0:
        return 1.0
    raw = span / max(1, max_ticks)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for step in _NICE_STEPS:
        if step * magnitude >= raw * (1 - 1e-9):
            return step * magnitude
    return 10.0 * magnitude


@dataclass(frozen=True, slots=True)
class LinearScale:
    """value -> r0 + (value - d0) / (d1 - d0) * (r1 - r0)."""

    domain: tuple[float, float]
    range: tuple[float, float]
    max_ticks: int = 6

    def __call__(self, value: float) -> float:
        d0, d1 = self.domain
        r0, r1 = self.range
        if d1 == d0:
            return (r0 + r1) / 2
        return r0 + (value - d0) / (d1 - d0) * (r1 - r0)

    def ticks(self) -> list[float]:
        d0, d1 = self.domain
        step = nice_step(d1 - d0, self.max_ticks)
        first = math.ceil(d0 / step - 1e-9)
        last = math.floor(d1 / step + 1e-9)
        return [round(i * step, 10) for i in range(first, last + 1)]


@dataclass(frozen=True, slots=True)
class LogScale:
    """Base-10 log scale: equal ratios take equal distances. The domain must be positive."""

    domain: tuple[float, float]
    range: tuple[float, float]

    def __post_init__(self) -> None:
        if self.domain[0] <= 0 or self.domain[1] <= 0:
            raise ValueError("a log scale needs a positive domain")

    def __call__(self, value: float) -> float:
        d0, d1 = (math.log10(v) for v in self.domain)
        r0, r1 = self.range
        if d1 == d0:
            return (r0 + r1) / 2
        return r0 + (math.log10(max(value, 1e-300)) - d0) / (d1 - d0) * (r1 - r0)

    def ticks(self) -> list[float]:
        lo, hi = (math.log10(v) for v in self.domain)
        decades = [10.0**k for k in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
        if hi - lo > 3:
            return decades
        # Few decades: 2x and 5x steps keep the axis readable.
        return sorted(
            v
            for k in range(math.floor(lo), math.ceil(hi) + 1)
            for v in (10.0**k, 2 * 10.0**k, 5 * 10.0**k)
            if self.domain[0] * (1 - 1e-9) <= v <= self.domain[1] * (1 + 1e-9)
        )


def linear_domain(values: Iterable[float], *, pad: float = 0.06) -> tuple[float, float]:
    """A padded, nice domain around `values`; starts at zero when the data sit well above it."""
    data = list(values)
    if not data:
        return (0.0, 1.0)
    lo, hi = min(data), max(data)
    if lo >= 0 and lo <= 0.4 * hi:
        lo = 0.0  # counts and concentrations read best from zero unless that squashes the data
    span = (hi - lo) or max(abs(hi), 1.0)
    lo_padded = lo if lo == 0.0 else lo - span * pad
    hi_padded = hi + span * pad
    step = nice_step(hi_padded - lo_padded, 6)
    return (math.floor(lo_padded / step) * step, math.ceil(hi_padded / step) * step)


def log_domain(values: Iterable[float]) -> tuple[float, float]:
    """Whole decades around the positive `values` (non-positive values cannot be drawn on a log axis)."""
    data = [v for v in values if v > 0]
    if not data:
        return (1.0, 10.0)
    lo = 10.0 ** math.floor(math.log10(min(data)))
    hi = 10.0 ** math.ceil(math.log10(max(data)))
    return (lo, hi if hi > lo else lo * 10)


def day_ticks(domain: tuple[float, float], max_ticks: int = 12) -> list[int]:
    """Whole-day ticks (day 0 included when in range) with a step of 1, 2, 3, 7, 14, ... days."""
    d0, d1 = domain
    span = d1 - d0
    step = next((s for s in _DAY_STEPS if span / s <= max_ticks), _DAY_STEPS[-1])
    first = math.ceil(d0 / step - 1e-9)
    last = math.floor(d1 / step + 1e-9)
    return [i * step for i in range(first, last + 1)]


def spread_labels(
    positions: list[float], min_gap: float, lo: float, hi: float, lines: list[int] | None = None
) -> list[float]:
    """Moves label positions apart so labels do not overlap, staying within [lo, hi].

    Label k starts at its position and takes ``lines[k]`` rows of `min_gap` pixels (default one row).
    Returns the new positions in the input order; labels keep their order along the axis.
    """
    rows = lines or [1] * len(positions)
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = [positions[i] for i in order]
    heights = [rows[i] * min_gap for i in order]
    for k in range(1, len(placed)):  # push down
        placed[k] = max(placed[k], placed[k - 1] + heights[k - 1])
    if placed and placed[-1] + heights[-1] - min_gap > hi:  # then pull the stack up from the bottom edge
        placed[-1] = hi - heights[-1] + min_gap
        for k in range(len(placed) - 2, -1, -1):
            placed[k] = min(placed[k], placed[k + 1] - heights[k])
    placed = [max(lo, p) for p in placed]
    result = [0.0] * len(positions)
    for rank, index in enumerate(order):
        result[index] = placed[rank]
    return result
