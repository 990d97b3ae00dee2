"""The CRS course at the evaluation instant: every source merged into one list of episodes, and a status
that can be known to be "none" [D].

Merge: episodes of any source that overlap (or are less than a day apart) are one episode. Its status,
latest grade and abatement come from the source with the most recent evidence (the latest vital sign,
flowsheet row or Condition date it rests on), because the chart's newest information describes the
present best: a problem-list CRS entry left "active" for weeks does not outweigh days of quiet vital signs,
and a documented grade of 0 today outweighs yesterday's vital signs. Its source is the most authoritative
one that contributed (a coded Condition, then a documented grade, then raw data), and its evidence lists
what every source said.

No episode: "none" when temperatures were recorded on (nearly) every day from infusion to the instant (up to
day 14), none febrile, with no vasopressor, no CRS-directed drug, no CRS record; "unknown" otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_service.engine.crs.inferred import InferredEpisode, inferred_episodes
from cds_service.engine.crs.inputs import CrsInputs
from cds_service.engine.crs.signs import Sign
from cds_service.engine.crs.sources import SourceEpisode, coded_episodes, documented_episodes, merge_gap
from cds_service.engine.ferritin import Rise
from cds_service.engine.model import CrsEpisode, CrsSource, CrsStatus, Evidence

AUTHORITY: dict[CrsSource, int] = {"condition": 3, "documented": 2, "inferred": 1}
VITALS = ("temperature", "bp_systolic", "map", "spo2", "o2_flow")


@dataclass(frozen=True, slots=True, kw_only=True)
class CrsCourse:
    episodes: tuple[CrsEpisode, ...]
    status: CrsStatus
    inferred: tuple[InferredEpisode, ...]
    worsening: tuple[Sign, Rise] | None  # a returning fever with a rising ferritin after improvement
    reason: str  # why the status is what it is, in a few words (for "none" and "unknown" above all)


def crs_course(inputs: CrsInputs) -> CrsCourse:
    recorded = coded_episodes(inputs) + documented_episodes(inputs)
    inferred, worsening = inferred_episodes(inputs, [(v.onset, v.abatement) for v in recorded])
    views = recorded + [_view(inputs, e) for e in inferred]
    episodes = [_merge(group) for group in _groups(inputs, views)]
    if episodes:
        latest = episodes[-1]
        reason = f"CRS {latest.status} ({', '.join(_sources(latest))})"
        return CrsCourse(
            episodes=tuple(episodes),
            status=latest.status,
            inferred=tuple(inferred),
            worsening=worsening,
            reason=reason,
        )
    status, reason = _none_or_unknown(inputs)
    return CrsCourse(episodes=(), status=status, inferred=tuple(inferred), worsening=None, reason=reason)


def _sources(episode: CrsEpisode) -> list[str]:
    return sorted({e.description.split(":")[0] for e in episode.evidence})


def _view(inputs: CrsInputs, episode: InferredEpisode) -> SourceEpisode:
    latest_vital = max(
        (lab.time for analyte in VITALS for lab in inputs.series(analyte)[-1:]), default=episode.last_sign
    )
    fever = max((s for s in episode.signs if s.kind == "fever"), key=lambda s: s.grade, default=None)
    worst = max(episode.signs, key=lambda s: s.grade)
    described = f"inferred from vital signs: maximum grade {episode.max_grade} ({worst.description})"
    if fever is None:
        described += " without a recorded fever"
    return SourceEpisode(
        source="inferred",
        onset=episode.onset,
        abatement=episode.abatement,
        max_grade=episode.max_grade,
        latest_grade=episode.current_grade,
        status=episode.status,
        resource_ids=tuple(dict.fromkeys(s.resource_id for s in episode.signs)),
        evidence_time=max(latest_vital, episode.last_sign),
        description=described,
    )


def _groups(inputs: CrsInputs, views: list[SourceEpisode]) -> list[list[SourceEpisode]]:
    groups: list[list[SourceEpisode]] = []
    end: datetime | None = None
    gap = merge_gap(inputs)
    for view in sorted(views, key=lambda v: v.onset):
        view_end = view.abatement or inputs.at
        if groups and end is not None and view.onset <= end + gap:
            groups[-1].append(view)
            end = max(end, view_end)
        else:
            groups.append([view])
            end = view_end
    return groups


def _merge(group: list[SourceEpisode]) -> CrsEpisode:
    newest = max(group, key=lambda v: (v.evidence_time, AUTHORITY[v.source]))
    grades = [v.max_grade for v in group if v.max_grade is not None]
    source = max(group, key=lambda v: AUTHORITY[v.source]).source
    return CrsEpisode(
        onset=min(v.onset for v in group),
        abatement=newest.abatement if newest.status == "resolved" else None,
        max_grade=max(grades) if grades else None,
        latest_grade=newest.latest_grade,
        status=newest.status,
        resource_ids=tuple(dict.fromkeys(rid for v in group for rid in v.resource_ids)),
        source=source,
        evidence=tuple(
            Evidence(
                "finding", v.description, v.resource_ids[-1] if v.resource_ids else None, time=v.evidence_time
            )
            for v in group
        ),
    )


def _none_or_unknown(inputs: CrsInputs) -> tuple[CrsStatus, str]:
    if not inputs.infusions:
        return "unknown", "no immune effector cell infusion on record"
    course = inputs.doc["course"]
    roles = frozenset(course["fever_not_required_after_roles"]) - {"antipyretic"}
    classes = frozenset(course["fever_not_required_after_classes"])
    first = inputs.infusions[0]
    through = min(inputs.at, first + timedelta(days=float(course["none_known_through_day"])))
    # Only in the CRS onset window: anakinra or a vasopressor months later (IEC-HS, sepsis) is not CRS.
    if any(
        d.role == "vasopressor" or d.role in roles or d.drug_class in classes
        for d in inputs.drugs
        if first <= d.time <= through
    ):
        return "unknown", "vasopressor or CRS-directed drug given, no CRS record"
    needed = (through.date() - first.date()).days + 1
    days = {
        lab.time.date()
        for lab in inputs.series("temperature")
        if first.date() <= lab.time.date() <= through.date()
    }
    missing = needed - len(days)
    if missing > int(course["none_max_missing_days"]):
        return "unknown", f"CRS course unknown: temperatures on {len(days)} of {needed} days after infusion"
    return "none", f"no CRS: afebrile on {len(days)} of {needed} days after infusion, no CRS record"
