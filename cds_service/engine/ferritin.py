"""Ferritin course shapes shared by the CRS course and the IEC-HS required criterion [D].

After CAR-T almost every patient with CRS keeps an elevated ferritin for days to weeks while it falls (the
seed's section 2): an elevated value alone says little. What separates IEC-HS is a ferritin that rises
again after the CRS phase. A *second rise* is a value at least `fold` x the lowest value that followed the
highest value of the course so far, once that low had fallen at least `min_fall` below the peak (a dip
of measurement noise on the way up is not a fall).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.model import LabValue
from cds_service.engine.units import scaled


@dataclass(frozen=True, slots=True)
class Rise:
    nadir: LabValue  # the lowest value after the peak, where the rise starts
    value: LabValue  # the first value >= fold x nadir
    peak: LabValue | None  # the peak the nadir followed (None: no earlier peak)


def second_rise(
    values: list[LabValue], since: datetime, until: datetime, fold: float, min_fall: float
) -> Rise | None:
    """The first rise of >= `fold` x the running nadir that followed the running peak, among values in
    [since, until] (time-sorted), where the nadir is at least `min_fall` (a fraction) below that peak."""
    peak: LabValue | None = None
    nadir: LabValue | None = None
    for lab in values:
        if lab.time < since or lab.value <= 0:
            continue
        if lab.time > until:
            break
        fell = nadir is not None and peak is not None and nadir.value <= scaled(1.0 - min_fall, peak.value)
        if fell and nadir is not None and lab.value >= scaled(fold, nadir.value):
            return Rise(nadir, lab, peak)
        if peak is None or lab.value > peak.value:
            peak, nadir = lab, None  # a new peak: the fall after it starts again
        elif nadir is None or lab.value < nadir.value:
            nadir = lab
    return None


def rise_from_low(values: list[LabValue], since: datetime, until: datetime, fold: float) -> Rise | None:
    """The first value >= `fold` x the lowest value before it, among values in [since, until]: a rise from a
    low course (no CRS peak to fall from, as after infusion without CRS)."""
    low: LabValue | None = None
    for lab in values:
        if lab.time < since or lab.value <= 0:
            continue
        if lab.time > until:
            break
        if low is not None and lab.value >= scaled(fold, low.value):
            return Rise(low, lab, None)
        if low is None or lab.value < low.value:
            low = lab
    return None


def rising_again(
    values: list[LabValue],
    crs_onset: datetime,
    crs_end: datetime | None,
    until: datetime,
    rule: dict[str, Any],
    rapid: dict[str, Any],
) -> tuple[Rise, str] | None:
    """A ferritin rising again after a CRS phase that began at `crs_onset` (and ended at `crs_end`, if it
    has): a second rise (after a fall from the course's peak), a rise of >= fold from the lowest value after
    the CRS ended, or a rapid rise (>= rapid fold within rapid hours) that starts after the CRS ended or on
    the falling limb. Returns the rise and what kind it is."""
    fold, min_fall = float(rule["fold"]), float(rule["min_fall"])
    found = second_rise(values, crs_onset, until, fold, min_fall)
    if found is not None:
        return found, "second rise after the CRS phase"
    if crs_end is not None:
        found = rise_from_low(values, crs_end, until, fold)
        if found is not None:
            return found, "rise after CRS resolved"
    pair = _rapid_after(values, crs_onset, crs_end, until, float(rapid["fold"]), float(rapid["within_hours"]))
    return (Rise(pair[0], pair[1], None), "rapid rise after the CRS phase") if pair else None


def _rapid_after(
    values: list[LabValue], onset: datetime, end: datetime | None, until: datetime, fold: float, hours: float
) -> tuple[LabValue, LabValue] | None:
    span = timedelta(hours=hours)
    peak = 0.0
    for i, earlier in enumerate(values):
        if earlier.time < onset or earlier.time > until:
            continue
        falling = earlier.value < peak
        peak = max(peak, earlier.value)
        if not falling and (end is None or earlier.time < end):
            continue
        for later in values[i + 1 :]:
            if later.time > until or later.time - earlier.time > span:
                break
            if earlier.value > 0 and later.value >= scaled(fold, earlier.value):
                return earlier, later
    return None
