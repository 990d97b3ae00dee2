"""CRS episodes as each source records them at the evaluation instant: coded Conditions and documented
grades (a site's flowsheet rows). Raw data is in engine.crs.inferred; engine.crs.course merges the three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cds_service.engine.crs.inputs import CrsInputs
from cds_service.engine.model import CrsSource

RESOLVED_STATUSES = frozenset({"resolved", "inactive", "remission"})
EpisodeStatus = Literal["active", "resolving", "resolved"]


def merge_gap(inputs: CrsInputs) -> timedelta:
    """Records (or sources' episodes) less than this apart are one episode [D] (criteria/astct_crs.yaml)."""
    return timedelta(hours=float(inputs.doc["course"]["merge_gap_hours"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceEpisode:
    """One source's view of an episode at the instant."""

    source: CrsSource
    onset: datetime
    abatement: datetime | None  # at or before the instant
    max_grade: int | None
    latest_grade: int | None
    status: EpisodeStatus
    resource_ids: tuple[str, ...]
    evidence_time: datetime  # how recent this view is: the latest record it rests on
    description: str


def coded_episodes(inputs: CrsInputs) -> list[SourceEpisode]:
    """CRS Conditions that existed at the instant, overlapping records merged. An abatement after the instant
    means active then; clinicalStatus resolved without an abatement is trusted (no time to tell)."""
    records = [
        r for r in inputs.conditions if r.crs and r.verification != "refuted" and r.existed_at(inputs.at)
    ]
    groups: list[list[tuple[datetime, datetime | None, int | None, bool, str]]] = []
    gap = merge_gap(inputs)
    for record in sorted(records, key=lambda r: r.onset or r.recorded or inputs.at):
        onset = record.onset or record.recorded or inputs.at
        abated = record.abated_by(inputs.at)
        closed = abated is not None or (record.abatement is None and record.clinical in RESOLVED_STATUSES)
        item = (onset, abated, record.crs_grade, closed, record.resource_id)
        if groups and _overlaps(groups[-1], onset, gap):
            groups[-1].append(item)
        else:
            groups.append([item])
    return [_coded(group) for group in groups]


def _overlaps(
    group: list[tuple[datetime, datetime | None, int | None, bool, str]], onset: datetime, gap: timedelta
) -> bool:
    if any(not closed for *_, closed, _ in group):
        return True
    ends = [end for _, end, _, _, _ in group if end is not None]
    return bool(ends) and onset <= max(ends) + gap


def _coded(group: list[tuple[datetime, datetime | None, int | None, bool, str]]) -> SourceEpisode:
    grades = [grade for _, _, grade, _, _ in group if grade is not None]
    latest = group[-1][2]
    closed = all(item[3] for item in group)
    ends = [end for _, end, _, _, _ in group if end is not None]
    status: EpisodeStatus = "resolved" if closed else "active"
    if not closed and grades and latest is not None and latest < max(grades):
        status = "resolving"
    abatement = max(ends) if closed and ends else None
    return SourceEpisode(
        source="condition",
        onset=group[0][0],
        abatement=abatement,
        max_grade=max(grades) if grades else None,
        latest_grade=latest,
        status=status,
        resource_ids=tuple(item[4] for item in group),
        evidence_time=max([abatement or group[-1][0], group[-1][0]]),
        description="CRS Condition (ICD-10-CM D89.83x)"
        + (f", grade {max(grades)}" if grades else "")
        + (f", abated {abatement.date().isoformat()}" if abatement else ""),
    )


def documented_episodes(inputs: CrsInputs) -> list[SourceEpisode]:
    """Episodes from documented CRS grade rows: from the first row > 0 to the next row of 0 (resolution)."""
    rows = [r for r in inputs.documented if r.kind == "crs_grade" and r.time <= inputs.at]
    episodes: list[SourceEpisode] = []
    current: list[tuple[datetime, int, str]] = []
    for row in rows:
        if row.value > 0:
            current.append((row.time, row.value, row.resource_id))
        elif current:
            episodes.append(_documented(current, (row.time, row.resource_id)))
            current = []
    if current:
        episodes.append(_documented(current, None))
    return episodes


def _documented(rows: list[tuple[datetime, int, str]], zero: tuple[datetime, str] | None) -> SourceEpisode:
    grades = [grade for _, grade, _ in rows]
    latest = grades[-1]
    status: EpisodeStatus = "resolved" if zero else ("resolving" if latest < max(grades) else "active")
    ids = tuple(rid for *_, rid in rows) + ((zero[1],) if zero else ())
    last_time = zero[0] if zero else rows[-1][0]
    return SourceEpisode(
        source="documented",
        onset=rows[0][0],
        abatement=zero[0] if zero else None,
        max_grade=max(grades),
        latest_grade=0 if zero else latest,
        status=status,
        resource_ids=ids,
        evidence_time=last_time,
        description=(
            f"documented CRS grade (flowsheet): maximum {max(grades)}, latest {0 if zero else latest}"
        ),
    )
