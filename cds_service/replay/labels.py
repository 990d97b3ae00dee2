"""Ground-truth labels (``patientId,onset,grade``) and the patient-level metrics they give.

Lead time = first "met" - labelled onset, in hours (negative: the rule was met before the team's onset).
Sensitivity = labelled patients (replayed) reaching "met" / labelled patients (replayed).
PPV = labelled patients among the patients reaching "met" / patients reaching "met".
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cds_service.replay.groups import PatientSummary

REQUIRED = ("patientId", "onset")


class LabelsError(Exception):
    """The labels file cannot be used (the message names the file and line)."""


@dataclass(frozen=True, slots=True)
class Label:
    onset: datetime
    grade: int | None


@dataclass(frozen=True, slots=True)
class Metrics:
    labelled: int  # labelled patients that were replayed (an IEC infusion on record)
    labelled_missing: int  # labelled patients not in the replay (not in the export or no infusion)
    detected: int  # labelled patients reaching met
    flagged: int  # patients reaching met
    flagged_labelled: int  # labelled among them
    lead_hours: tuple[float, ...]  # first met - onset, for each detected patient

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.labelled if self.labelled else None

    @property
    def ppv(self) -> float | None:
        return self.flagged_labelled / self.flagged if self.flagged else None

    @property
    def median_lead_hours(self) -> float | None:
        return statistics.median(self.lead_hours) if self.lead_hours else None


def _instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_labels(path: Path) -> dict[str, Label]:
    """patientId -> label; raises LabelsError with file:line for a bad row or header."""
    labels: dict[str, Label] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise LabelsError(
                f"{path}:1: missing column(s) {', '.join(missing)} (need patientId,onset[,grade])"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            patient = (row.get("patientId") or "").strip()
            if not patient:
                raise LabelsError(f"{where}: empty patientId")
            try:
                onset = _instant(row.get("onset") or "")
                grade_text = (row.get("grade") or "").strip()
                grade = int(grade_text) if grade_text else None
            except ValueError as exc:
                raise LabelsError(f"{where}: {exc}") from exc
            labels[patient] = Label(onset, grade)
    return labels


def lead_hours(summary: PatientSummary, label: Label | None) -> float | None:
    if label is None or summary.first_met is None:
        return None
    return (summary.first_met - label.onset).total_seconds() / 3600


class MetricsBuilder:
    """Counts patient by patient (memory: the labelled patients, not every patient)."""

    def __init__(self, labels: dict[str, Label]) -> None:
        self.labels = labels
        self.replayed_labelled: set[str] = set()
        self.flagged = 0
        self.detected = 0
        self.leads: list[float] = []

    def add(self, summary: PatientSummary) -> None:
        label = self.labels.get(summary.patient_id)
        if label is not None:
            self.replayed_labelled.add(summary.patient_id)
        if summary.first_met is None:
            return
        self.flagged += 1
        if label is not None:
            self.detected += 1
            lead = lead_hours(summary, label)
            if lead is not None:
                self.leads.append(lead)

    def result(self) -> Metrics:
        labelled = len(self.replayed_labelled)
        return Metrics(
            labelled=labelled,
            labelled_missing=len(self.labels) - labelled,
            detected=self.detected,
            flagged=self.flagged,
            flagged_labelled=self.detected,
            lead_hours=tuple(sorted(self.leads)),
        )


def metrics(summaries: Iterable[PatientSummary], labels: dict[str, Label]) -> Metrics:
    builder = MetricsBuilder(labels)
    for summary in summaries:
        builder.add(summary)
    return builder.result()
