"""What the driver keeps while patient groups finish: running totals, bounded lists for the report, and one
sorted patients.csv part per group (merged at the end), so its memory does not grow with the patients."""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cds_service.replay.charts import lane_key
from cds_service.replay.groups import GroupResult, PatientSummary
from cds_service.replay.labels import Label, MetricsBuilder
from cds_service.replay.outputs import patient_columns, patient_row

MAX_LANES = 300  # lanes (and rows of the "met" table) the report draws; every patient is in patients.csv
FAN_IN = 200  # patients.csv parts merged at once (open files)


@dataclass(slots=True)
class Totals:
    patients: int = 0
    without_infusion: int = 0
    evaluations: int = 0
    reached_possible: int = 0
    reached_met: int = 0
    cards_shown: int = 0
    patient_days: int = 0
    card_day_counts: list[int] = field(
        default_factory=lambda: [0, 0, 0, 0]
    )  # patient-days: 0, 1, 2, 3+ cards
    cards_by_day: list[int] = field(default_factory=list)  # cards on each day after infusion, all patients

    def add(self, p: PatientSummary) -> None:
        self.patients += 1
        self.evaluations += p.evaluations
        self.reached_possible += p.first_possible is not None
        self.reached_met += p.first_met is not None
        self.cards_shown += p.cards_shown
        self.patient_days += len(p.card_days)
        self.cards_by_day += [0] * (len(p.card_days) - len(self.cards_by_day))
        for day, n in enumerate(p.card_days):
            self.card_day_counts[min(n, 3)] += 1
            self.cards_by_day[day] += n


class Best:
    """The `size` first patients in lane order, kept while patients stream by."""

    def __init__(self, size: int = MAX_LANES) -> None:
        self.size = size
        self.items: list[PatientSummary] = []

    def add(self, p: PatientSummary) -> None:
        self.items.append(p)
        if len(self.items) >= 2 * self.size:
            self.items = sorted(self.items, key=lane_key)[: self.size]

    def sorted(self) -> list[PatientSummary]:
        return sorted(self.items, key=lane_key)[: self.size]


class Collector:
    """Takes each GroupResult as it arrives (in any order)."""

    def __init__(self, work: Path, labels: dict[str, Label] | None) -> None:
        self.parts = work / "patients"
        self.parts.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.totals = Totals()
        self.lanes = Best()
        self.flagged = Best()
        self.metrics = MetricsBuilder(labels or {})
        self.timelines: dict[int, str] = {}
        self.unreadable: list[tuple[str, str]] = []
        self.seconds = {"read": 0.0, "evaluate": 0.0}

    def add(self, group: GroupResult) -> None:
        self.totals.without_infusion += group.without_infusion
        self.unreadable += group.unreadable
        for key, value in group.seconds.items():
            self.seconds[key] += value
        if group.timeline:
            self.timelines[group.group] = group.timeline
        with (self.parts / f"g{group.group:05d}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            for p in sorted(group.patients, key=lambda s: s.patient_id):
                writer.writerow(patient_row(p, self.labels))
                self.totals.add(p)
                self.metrics.add(p)
                self.lanes.add(p)
                if p.first_met is not None:
                    self.flagged.add(p)

    def timeline_parts(self) -> list[str]:
        """The groups' Parquet parts in group order (the same order whatever the workers)."""
        return [self.timelines[g] for g in sorted(self.timelines)]

    def write_patients(self, path: Path) -> None:
        """patients.csv: the groups' sorted parts merged by patient id (at most FAN_IN files open)."""
        parts = sorted(self.parts.glob("g*.csv"))
        level = 0
        while len(parts) > FAN_IN:
            parts = [
                _merge(parts[i : i + FAN_IN], self.parts / f"m{level}-{i:06d}.csv")
                for i in range(0, len(parts), FAN_IN)
            ]
            level += 1
        _merge(parts, path, patient_columns(self.labels is not None))


def _merge(parts: list[Path], path: Path, header: Sequence[str] | None = None) -> Path:
    """Merge CSV files sorted by their first column into `path`, one row at a time."""
    handles = [part.open(newline="", encoding="utf-8") for part in parts]
    try:
        rows: Iterator[list[str]] = heapq.merge(*(csv.reader(h) for h in handles), key=lambda r: r[0])
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            if header is not None:
                writer.writerow(header)
            writer.writerows(rows)
    finally:
        for handle in handles:
            handle.close()
    return path
