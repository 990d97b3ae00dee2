"""Second pass: one Dask task per patient group reads its spill files and replays each patient.

A task holds one group's raw lines (about ``partition.PARTITION_BYTES``) and one patient's parsed resources
at a time; it writes the group's timeline rows to ``spill/timeline/gNNNNN.parquet`` and returns per-patient
summaries (a few hundred bytes each) to the driver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from cds_service.cards.content import load_card_content
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.record import read_record
from cds_service.errors import InputError
from cds_service.replay.partition import read_group
from cds_service.replay.patient import PatientReplay, card_renderer, replay_record
from cds_service.replay.timeline import TimelineWriter

Segment = tuple[float, float, str]  # (from day, to day, status)


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """What every task needs; paths must be readable from every worker (a shared filesystem)."""

    step: timedelta = timedelta(hours=6)
    horizon: timedelta | None = timedelta(days=100)
    mappings_dir: str | None = None  # None: the workers' default (CDS_MAPPINGS_DIR or the source tree)
    cards_dir: str | None = None


@dataclass(frozen=True, slots=True)
class PatientSummary:
    patient_id: str
    infusion: datetime
    first_possible: datetime | None
    first_met: datetime | None
    max_grade: int | None
    evaluations: int
    cards_shown: int  # distinct cards summed over patient-days
    card_days: tuple[int, ...]  # distinct cards on each day after infusion
    segments: tuple[Segment, ...]  # the IEC-HS status over days after infusion, run-length encoded

    @classmethod
    def of(cls, replay: PatientReplay) -> PatientSummary:
        days = replay.cards_per_day()
        return cls(
            patient_id=replay.patient_id,
            infusion=replay.infusion,
            first_possible=replay.first_possible,
            first_met=replay.first_met,
            max_grade=replay.max_grade,
            evaluations=len(replay.instants),
            cards_shown=sum(days),
            card_days=tuple(days),
            segments=_segments(replay),
        )


@dataclass(slots=True)
class GroupResult:
    group: int
    patients: list[PatientSummary] = field(default_factory=list)
    without_infusion: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (patient id, reason)
    timeline: str | None = None
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "evaluate": 0.0})


def _segments(replay: PatientReplay) -> tuple[Segment, ...]:
    out: list[list[float | str]] = []
    for index, instant in enumerate(replay.instants):
        nxt = replay.instants[index + 1].day if index + 1 < len(replay.instants) else instant.day + 0.25
        if out and out[-1][2] == instant.status:
            out[-1][1] = nxt
        else:
            out.append([instant.day, nxt, instant.status])
    return tuple((float(a), float(b), str(s)) for a, b, s in out)


def replay_group(group: int, spill: str, settings: ReplaySettings) -> GroupResult:
    """Dask task: replay every patient of one group (sorted by id); timeline rows to a Parquet part."""
    kb = load_knowledge(Path(settings.mappings_dir) if settings.mappings_dir else None)
    render = card_renderer(
        kb, load_card_content(kb, Path(settings.cards_dir) if settings.cards_dir else None)
    )
    result = GroupResult(group)
    patients = read_group(Path(spill), group)
    writer = TimelineWriter(Path(spill) / "timeline" / f"g{group:05d}.parquet")
    for patient_id in sorted(patients):
        started = time.perf_counter()
        lines = patients.pop(patient_id)
        try:
            record = read_record([orjson.loads(line) for line in lines], knowledge=kb)
        except InputError as exc:
            result.unreadable.append((patient_id, str(exc)))
            continue
        read_done = time.perf_counter()
        replay = replay_record(record, patient_id, render, step=settings.step, horizon=settings.horizon)
        result.seconds["read"] += read_done - started
        result.seconds["evaluate"] += time.perf_counter() - read_done
        if replay is None:
            result.without_infusion += 1
            continue
        writer.add(replay)
        result.patients.append(PatientSummary.of(replay))
    result.timeline = writer.close()
    return result
