"""The next step for a patient who meets IEC-HS criteria: the seed's line order and its refractoriness rule.

Lines (seed section 5, Hines 2023 via the seed): first line anakinra early, with or without corticosteroids;
second line ruxolitinib in addition to corticosteroids with escalated anakinra; salvage (emapalumab,
etoposide)
for cases refractory to anti-cytokine treatments and corticosteroids. A line is "started" by the first
administration of one of its agents at or after the IEC-HS onset estimate (the infusion when no onset is
known); the next line becomes relevant once the current line started `next_line_after_hours` ago and IEC-HS
criteria are still met [D]. No grade gates anything: the seed's conditions (which may name a grade) are shown
with each option, never applied. Nothing that is running is suggested again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_service.cards.content import CardContent, Option
from cds_service.cards.course import Course
from cds_service.cards.dosing import doses_for
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.model import EvaluationResult

LINES = ("first", "second", "salvage")
LINE_CLASSES = {
    "first": ("anakinra", "corticosteroid"),
    "second": ("ruxolitinib",),
    "salvage": ("emapalumab", "etoposide"),
}
MAX_OPTIONS = 2


@dataclass(frozen=True, slots=True)
class Step:
    line: str  # the line the next step belongs to
    options: tuple[Option, ...]  # at most two, in the seed's order, none running
    keep: bool  # the current line is running: keep it
    decision_point: datetime | None  # when the next line becomes relevant (criteria still met)
    next_line: str | None


def _started(result: EvaluationResult, line: str) -> datetime | None:
    iec = IEC_HS.result(result.instruments)
    since = iec.onset or result.therapy.infusion_time
    times = [
        e.time
        for e in result.drugs
        if e.source == "administration"
        and e.drug_class in LINE_CLASSES[line]
        and e.time <= result.at
        and (since is None or e.time >= since)
    ]
    return min(times) if times else None


def line_options(content: CardContent, result: EvaluationResult, line: str) -> tuple[Option, ...]:
    """The line's options with a dose for this patient, in the seed's order; one corticosteroid option
    (the standard regimen where the seed gives one for this patient, else pulse dosing)."""
    out: list[Option] = []
    for option in content.options:
        if option.line != line or not doses_for(option, result.patient):
            continue
        if option.drug_class == "corticosteroid" and any(o.drug_class == "corticosteroid" for o in out):
            continue
        out.append(option)
    return tuple(out)


def next_step(result: EvaluationResult, content: CardContent, all_courses: tuple[Course, ...]) -> Step:
    running = {c.drug_class for c in all_courses if c.running}
    wait = timedelta(hours=content.next_line_after_hours)
    for index, line in enumerate(LINES):
        started = _started(result, line)
        following = LINES[index + 1] if index + 1 < len(LINES) else None
        candidates = line_options(content, result, line)
        if line == "second":  # ruxolitinib "in addition to corticosteroids"
            candidates += line_options(content, result, "first")[1:]
        fresh = tuple(o for o in candidates if o.drug_class not in running)
        if started is None:
            return Step(line, fresh[:MAX_OPTIONS], False, None, following)
        if result.at - started < wait or following is None:
            return Step(line, fresh[:MAX_OPTIONS], True, started + wait if following else None, following)
    raise AssertionError("unreachable: the last line always returns")
