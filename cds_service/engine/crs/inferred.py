"""CRS episodes inferred from raw data by the ASTCT 2019 grading [R], with the project's course rules [D].

* An episode starts with a fever (>= 38.0 C) within the onset window after an infusion.
* It goes on while CRS signs follow each other within the quiet period: fevers; hypotension, vasopressors
  and oxygen above the level the patient had before the episode count while a fever was seen within the
  quiet period, or once antipyretic or anti-cytokine therapy was given (then fever is no longer required,
  Lee 2019).
* It has resolved when no sign followed for the quiet period (24 h) and an afebrile temperature was taken
  after the last sign; its abatement is the time of that last sign.
* A fever that returns after the episode improved (afebrile for the improvement period) or resolved,
  together with a rising ferritin (the IEC-HS second rise), is worsening after improvement, not CRS: the
  episode stops there and records the worsening (IEC-HS itself often brings fever).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cds_service.engine.crs.inputs import CrsInputs
from cds_service.engine.crs.signs import Sign, all_signs
from cds_service.engine.ferritin import Rise, rising_again


@dataclass(frozen=True, slots=True, kw_only=True)
class InferredEpisode:
    onset: datetime
    last_sign: datetime
    signs: tuple[Sign, ...]
    max_grade: int
    current_grade: int  # the highest grade of the last quiet period (0: no sign in it)
    status: Literal["active", "resolving", "resolved"]
    abatement: datetime | None
    worsening: tuple[Sign, Rise] | None  # the returning fever and the ferritin rise that made it IEC-HS


@dataclass(frozen=True, slots=True)
class _Rules:
    quiet: timedelta
    window: timedelta
    improvement: timedelta
    rise: dict[str, Any]
    roles: frozenset[str]
    classes: frozenset[str]


def _rules(inputs: CrsInputs) -> _Rules:
    course = inputs.doc["course"]
    return _Rules(
        quiet=timedelta(hours=float(course["resolution_quiet_hours"])),
        window=timedelta(days=float(course["onset_window_days"])),
        improvement=timedelta(hours=float(course["improvement_afebrile_hours"])),
        rise=inputs.kb.criteria["iec_hs"]["required"]["second_rise"],
        roles=frozenset(course["fever_not_required_after_roles"]),
        classes=frozenset(course["fever_not_required_after_classes"]),
    )


def inferred_episodes(
    inputs: CrsInputs, recorded: list[tuple[datetime, datetime | None]]
) -> tuple[list[InferredEpisode], tuple[Sign, Rise] | None]:
    """Episodes from raw data, and the worsening after improvement if one was seen. `recorded` holds the
    (onset, abatement) of episodes other sources know, so a fever after them is read the same way."""
    rules = _rules(inputs)
    signs = all_signs(inputs)
    therapy = [d.time for d in inputs.drugs if d.role in rules.roles or d.drug_class in rules.classes]
    episodes: list[InferredEpisode] = []
    worsening: tuple[Sign, Rise] | None = None
    for fever in (s for s in signs if s.kind == "fever"):
        if episodes and fever.start <= episodes[-1].last_sign + rules.quiet:
            continue  # already part of the previous episode
        before = _episode_before(episodes, recorded, fever.start, rules.quiet)
        if before is not None:
            if worsening is not None and worsening[0].start >= before[0]:
                continue  # after a worsening, fevers belong to the IEC-HS phase
            rise = _ferritin_rising(inputs, rules, before, fever.start)
            if rise is not None:
                worsening = worsening or (fever, rise)
                if episodes:
                    episodes[-1] = _with_worsening(episodes[-1], fever, rise)
                continue
        if not _in_window(inputs, fever.start, rules.window):
            continue
        episode = _episode(inputs, rules, signs, therapy, fever)
        if before is not None and all(s.kind == "fever" for s in episode.signs):
            continue  # a lone fever after CRS resolved is not a recurrence of CRS [D]
        episodes.append(episode)
        worsening = episode.worsening or worsening
    return episodes, worsening


def _episode_before(
    episodes: list[InferredEpisode],
    recorded: list[tuple[datetime, datetime | None]],
    time: datetime,
    quiet: timedelta,
) -> tuple[datetime, datetime] | None:
    """(onset, end) of the latest episode that ended (or quieted) before `time`, from any source."""
    ended = [(e.onset, e.last_sign) for e in episodes if e.last_sign + quiet < time]
    ended += [(onset, end) for onset, end in recorded if end is not None and end <= time]
    return max(ended, default=None)


def _in_window(inputs: CrsInputs, time: datetime, window: timedelta) -> bool:
    return any(infusion <= time <= infusion + window for infusion in inputs.infusions)


def _ferritin_rising(
    inputs: CrsInputs, rules: _Rules, episode: tuple[datetime, datetime | None], fever: datetime
) -> Rise | None:
    """Ferritin rising again after the episode (engine.ferritin.rising_again), seen at or before the
    evaluation instant, starting no later than the fever and reached within the rise window after it."""
    onset, end = episode
    iec = inputs.kb.criteria["iec_hs"]["required"]
    found = rising_again(inputs.series("ferritin"), onset, end, inputs.at, rules.rise, iec["rapid_rise"])
    if found is None:
        return None
    rise = found[0]
    window = timedelta(hours=float(rules.rise["with_fever_hours"]))
    if rise.nadir.time > fever or rise.value.time > fever + window:
        return None
    return rise


def _with_worsening(episode: InferredEpisode, fever: Sign, rise: Rise) -> InferredEpisode:
    return InferredEpisode(
        onset=episode.onset,
        last_sign=episode.last_sign,
        signs=episode.signs,
        max_grade=episode.max_grade,
        current_grade=episode.current_grade,
        status="resolved" if episode.status == "resolved" else "resolving",
        abatement=episode.abatement,
        worsening=(fever, rise),
    )


def _episode(
    inputs: CrsInputs, rules: _Rules, signs: list[Sign], therapy: list[datetime], first: Sign
) -> InferredEpisode:
    baseline = max(
        (s.grade for s in signs if s.kind == "oxygen" and first.start - rules.quiet <= s.start < first.start),
        default=0,
    )
    members = [first]
    last, last_fever = first.end, first.start
    worsening: tuple[Sign, Rise] | None = None
    for sign in signs:
        if sign.start <= first.start and sign is not first:
            continue
        if sign.start > last + rules.quiet:
            break
        if sign.kind == "fever":
            if sign.start - last_fever >= rules.improvement and (
                rise := _ferritin_rising(inputs, rules, (first.start, last), sign.start)
            ):
                worsening = (sign, rise)  # improved, then a fever with a rising ferritin: IEC-HS
                break
            last_fever = sign.start
        elif sign.kind == "oxygen" and sign.grade <= baseline:
            continue
        elif sign.start > last_fever + rules.quiet and not any(
            first.start <= t <= sign.start for t in therapy
        ):
            continue
        members.append(sign)
        last = max(last, sign.end)
    return _finish(inputs, rules, members, last, worsening)


def _finish(
    inputs: CrsInputs,
    rules: _Rules,
    members: list[Sign],
    last: datetime,
    worsening: tuple[Sign, Rise] | None,
) -> InferredEpisode:
    max_grade = max(s.grade for s in members)
    recent = [s.grade for s in members if s.end >= inputs.at - rules.quiet]
    current = max(recent, default=0)
    fever = inputs.kb.threshold("temperature", inputs.doc["fever"])
    afebrile_after = any(
        last < lab.time <= inputs.at and not fever.test(lab.value) for lab in inputs.series("temperature")
    )
    status: Literal["active", "resolving", "resolved"]
    if inputs.at - last >= rules.quiet and afebrile_after:
        status = "resolved"
    elif current < max_grade or worsening is not None:
        status = "resolving"
    else:
        status = "active"
    return InferredEpisode(
        onset=members[0].start,
        last_sign=last,
        signs=tuple(members),
        max_grade=max_grade,
        current_grade=current,
        status=status,
        abatement=last if status == "resolved" else None,
        worsening=worsening,
    )
