"""Everything the instruments read, with the window, worst-value, baseline and ULN/LLN rules in one place.

Rules (reference, general implementation rules 2-4): over the evaluation window use the worst value (max or
min per analyte); baseline = last value on or before the infusion (or lymphodepletion, if configured);
ULN/LLN from the Observation's referenceRange, else the fallback table (reported).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from cds_service.engine.config import EngineConfig
from cds_service.engine.crs import CrsCourse
from cds_service.engine.knowledge import Knowledge, Threshold
from cds_service.engine.model import (
    CrsEpisode,
    DrugEvent,
    Evidence,
    FindingRecord,
    LabValue,
    PatientInfo,
    ProcedureEvent,
    Therapy,
)
from cds_service.engine.rows import DeviceRow, DocumentedRow

_VALUE = attrgetter("value")


@dataclass(slots=True)
class Context:
    kb: Knowledge
    config: EngineConfig
    at: datetime
    window_start: datetime
    labs: dict[str, list[LabValue]]
    findings: dict[str, FindingRecord]
    drugs: list[DrugEvent]
    procedures: list[ProcedureEvent]
    therapy: Therapy
    crs: list[CrsEpisode]
    patient: PatientInfo
    crs_course: CrsCourse
    infusions: tuple[datetime, ...] = ()  # every IEC infusion at or before `at`
    devices: list[DeviceRow] = field(default_factory=list)  # oxygen device rows at or before `at`
    documented: list[DocumentedRow] = field(default_factory=list)  # documented grade rows, likewise
    supplied_types: frozenset[str] = frozenset()
    _times: dict[str, list[datetime]] = field(default_factory=dict)
    # The instruments ask for the same worst values (ferritin over the window, ...): found once each.
    _worst: dict[tuple[str, datetime | None, datetime | None], LabValue | None] = field(default_factory=dict)

    def values(
        self, analyte: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[LabValue]:
        """Values of `analyte` with start <= time <= end (default: the evaluation window)."""
        series = self.labs.get(analyte)
        if not series:
            return []
        times = self._times.get(analyte)
        if times is None:
            times = self._times[analyte] = [lab.time for lab in series]
        lo = bisect_left(times, start if start is not None else self.window_start)
        hi = bisect_right(times, end if end is not None else self.at)
        return series[lo:hi]

    def worst(
        self, analyte: str, start: datetime | None = None, end: datetime | None = None
    ) -> LabValue | None:
        """The worst value (max or min, per analyte) with start <= time <= end; the first of equals."""
        key = (analyte, start, end)
        if key in self._worst:
            return self._worst[key]
        series = self.values(analyte, start, end)
        found = None
        if series:
            pick = max if self.kb.analytes[analyte]["worst"] == "max" else min
            found = pick(series, key=_VALUE)
        self._worst[key] = found
        return found

    @property
    def baseline_anchor(self) -> datetime | None:
        if self.config.baseline == "lymphodepletion" and self.therapy.lymphodepletion_time is not None:
            return self.therapy.lymphodepletion_time
        return self.therapy.infusion_time

    def baseline(self, analyte: str) -> LabValue | None:
        anchor = self.baseline_anchor
        if anchor is None:
            return None
        series = self.values(analyte, datetime.min.replace(tzinfo=anchor.tzinfo), anchor)
        return series[-1] if series else None

    def finding(self, name: str) -> FindingRecord:
        return self.findings.get(name) or FindingRecord(name, "unknown")

    def drugs_with_role(self, role: str, start: datetime | None = None) -> list[DrugEvent]:
        return [d for d in self.drugs if d.role == role and (start is None or d.time >= start)]


def compare(threshold: Threshold, lab: LabValue) -> bool | None:
    """Test a value against a cut-off; a censored value ("<0.5") is decided only when its bound decides it."""
    if lab.comparator is None:
        return threshold.test(lab.value)
    below = lab.comparator in {"<", "<="}
    if threshold.op in {">", ">="}:
        if below and lab.value <= threshold.value:
            return False
        if not below and lab.value >= threshold.value:
            return True
    else:
        if below and lab.value <= threshold.value:
            return True
        if not below and lab.value >= threshold.value:
            return False
    return None


def value_evidence(
    kb: Knowledge, lab: LabValue, note: str = "", threshold: float | None = None, boundary_flag: bool = True
) -> Evidence:
    """Evidence for one value, flagged when within one reporting increment of the cut-off."""
    boundary = False
    if boundary_flag and threshold is not None:
        # The reporting increment is inferred from the decimals sent; capped at 1% of the cut-off because
        # JSON numbers such as 39.0 do not say whether the lab reports to 1 or to 0.1.
        increment = min(lab.increment, 0.01 * abs(threshold))
        boundary = abs(lab.value - threshold) <= increment + 1e-12
    shown = f"{lab.comparator or ''}{lab.value:g} {lab.unit}"
    if lab.original_unit != lab.unit:
        shown += f" (reported {lab.comparator or ''}{lab.original_value:g} {lab.original_unit})"
    extras = [note] if note else []
    if lab.preliminary:
        extras.append("preliminary result")
    if boundary:
        extras.append("within one reporting increment of the cut-off")
    description = f"{kb.display(lab.analyte)} {shown}" + (f"; {'; '.join(extras)}" if extras else "")
    return Evidence(
        kind="value",
        description=description,
        resource_id=lab.resource_id,
        analyte=lab.analyte,
        value=lab.value,
        unit=lab.unit,
        time=lab.time,
        boundary=boundary,
    )
