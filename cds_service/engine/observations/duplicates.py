"""Duplicate results: the same analyte, time and value twice (e.g. one result sent under two ids).

The first is used and each later one is reported. Duplicates are rare, so they are looked for only where a
series holds two values at one time (`may_repeat`); only then is every value checked (`Duplicates`).
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter, eq

from cds_service.engine.model import DataIssue, LabValue

TIME = attrgetter("time")
_SAME_VALUE = attrgetter("analyte", "time", "value")


def may_repeat(series: list[LabValue]) -> bool:
    """Whether a time-sorted series holds the same value twice at one time. Checked in C: adjacent times
    first (equal times are rare within one analyte), the full (analyte, time, value) set only then."""
    if len(series) < 2:
        return False
    times = list(map(TIME, series))
    if not any(map(eq, times, times[1:])):
        return False
    return len(set(map(_SAME_VALUE, series))) != len(series)


class Duplicates:
    """The values seen so far in one evaluation; a repeat is reported to `issues`."""

    def __init__(self, issues: list[DataIssue]) -> None:
        self._issues = issues
        self._seen: dict[tuple[str, datetime, float], str] = {}

    def first(self, lab: LabValue) -> bool:
        """True for the first value with its analyte, time and value; a later one is reported."""
        seen = self._seen
        size = len(seen)
        first = seen.setdefault((lab.analyte, lab.time, lab.value), lab.resource_id)
        if len(seen) > size:
            return True
        problem = f"duplicate of {first} (same analyte, time and value)"
        self._issues.append(DataIssue(lab.resource_id, problem, severity="flagged"))
        return False
