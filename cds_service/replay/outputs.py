"""The run's files: patients.csv rows, problems.csv and summary.json (timeline: replay.timeline)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cds_service.replay.groups import PatientSummary
from cds_service.replay.labels import Label, lead_hours
from cds_service.replay.partition import ChunkResult, problems_file

PATIENT_COLUMNS = ("patientId", "firstPossible", "firstMet", "maxGrade", "evaluations", "cardsShown")
LABEL_COLUMNS = ("labelOnset", "labelGrade", "leadTimeHours")
PROBLEM_COLUMNS = ("file", "line", "patientId", "problem")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def patient_columns(with_labels: bool) -> tuple[str, ...]:
    return PATIENT_COLUMNS + (LABEL_COLUMNS if with_labels else ())


def patient_row(p: PatientSummary, labels: dict[str, Label] | None) -> list[object]:
    """One patients.csv row; the label columns only when labels were given."""
    row: list[object] = [
        p.patient_id,
        iso(p.first_possible),
        iso(p.first_met),
        "" if p.max_grade is None else p.max_grade,
        p.evaluations,
        p.cards_shown,
    ]
    if labels is not None:
        label = labels.get(p.patient_id)
        lead = lead_hours(p, label)
        row += [
            iso(label.onset) if label else "",
            "" if label is None or label.grade is None else label.grade,
            "" if lead is None else f"{lead:.1f}",
        ]
    return row


@dataclass(slots=True)
class Problems:
    """What was skipped, never silently: malformed lines (file:line) and unreadable patients."""

    lines: int = 0
    patients: int = 0
    first: list[str] = field(default_factory=list)  # the first few, for the terminal


def write_problems(
    path: Path, spill: Path, chunks: list[ChunkResult], unreadable: Iterable[tuple[str, str]]
) -> Problems:
    """problems.csv with each chunk's line numbers turned into the file's own (1-based)."""
    found = Problems()
    offsets: dict[str, int] = {}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PROBLEM_COLUMNS)
        for result in sorted(chunks, key=lambda r: r.chunk.index):
            name = Path(result.chunk.path).name
            offset = offsets.get(result.chunk.path, 0)
            offsets[result.chunk.path] = offset + result.lines
            if not result.problems:
                continue
            with problems_file(spill, result.chunk).open(encoding="utf-8") as lines:
                for entry in lines:
                    local, _, reason = entry.rstrip("\n").partition("\t")
                    line = offset + int(local)
                    writer.writerow([name, line, "", reason])
                    found.lines += 1
                    if len(found.first) < 5:
                        found.first.append(f"{name}:{line}: {reason}")
        for patient, reason in unreadable:
            writer.writerow(["", "", patient, reason])
            found.patients += 1
            if len(found.first) < 5:
                found.first.append(f"patient {patient}: {reason}")
    return found


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
