"""What a trend chart shows, independent of how it is drawn.

The x unit is days (post-infusion, or relative to the evaluation instant when no infusion is on record);
y values are in the analyte's canonical unit. Everything is immutable so a chart can be rendered twice (SVG
and its text alternative) from the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RefKind = Literal["threshold", "uln", "lln"]


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement: x in days, y in the chart's unit; `when` is the human-readable time."""

    x: float
    y: float
    when: str = ""
    flag: str = ""  # "H" / "L" against the observation's own reference range, "" otherwise


@dataclass(frozen=True, slots=True)
class Series:
    """One analyte's values, in time order."""

    key: str
    label: str
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class RefLine:
    """A horizontal reference: a published threshold, or the upper/lower reference limit."""

    y: float
    label: str
    kind: RefKind


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded period on the x axis (a CRS episode)."""

    start: float
    end: float
    label: str
    open_ended: bool = False  # still active at the evaluation instant
    # (start, end, grade) of each calendar day's ASTCT 2019 grade inside the band: coloured by grade
    grades: tuple[tuple[float, float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Marker:
    """A drug administration at x; `symbol` is the short text drawn above the plot."""

    x: float
    label: str
    symbol: str
    kind: str
    when: str = ""


@dataclass(frozen=True, slots=True)
class EventLine:
    """A vertical line at x (the infusion, the evaluation instant)."""

    x: float
    label: str
    kind: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything one chart shows."""

    id: str
    title: str
    unit: str
    x_label: str
    x_domain: tuple[float, float]
    log_y: bool = False
    series: tuple[Series, ...] = ()
    lines: tuple[RefLine, ...] = ()
    bands: tuple[Band, ...] = ()
    markers: tuple[Marker, ...] = ()
    events: tuple[EventLine, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def has_data(self) -> bool:
        return any(s.points for s in self.series)


@dataclass(frozen=True, slots=True)
class Layout:
    """Pixel geometry of one chart (the SVG scales to its container through viewBox)."""

    width: float = 600
    height: float = 300
    left: float = 66
    right: float = 140  # room for reference-line labels
    top: float = 30  # the drug-marker lane sits above the plot
    bottom: float = 42
    label_gap: float = 11  # minimum vertical distance between two reference-line labels

    @property
    def plot_left(self) -> float:
        return self.left

    @property
    def plot_right(self) -> float:
        return self.width - self.right

    @property
    def plot_top(self) -> float:
        return self.top

    @property
    def plot_bottom(self) -> float:
        return self.height - self.bottom
