"""The card rules: indicator, "concerning" screens, first-line start, refractory (second line) and salvage.

All are project rules [D] built on the review and the issue; each is documented with its source in
docs/clinical-content.md:

* indicator `critical`: IEC-HS met, or grade >= high_grade (3);
  `warning`: indeterminate with a concerning criterion met (required ferritin or a most-common
  manifestation), or HScore >= its published cut-off (169); `info` otherwise.
* negative screen: IEC-HS not met (or not applicable) and the indicator is `info`.
* first-line start: the earliest MedicationAdministration of anakinra or a corticosteroid at or after the
  IEC-HS onset estimate (or the infusion when no onset is known). Administrations before onset (e.g.
  steroids for CRS or ICANS) do not count; orders (MedicationRequest) do not prove a dose was given.
* refractory (second line): IEC-HS still met and first-line therapy started >= 48 h before the evaluation.
* salvage: refractory and grade >= high_grade.
* standard-dose corticosteroids: IEC-HS met, grade < high_grade and no neurotoxicity criterion met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cds_service.cards.content import CardContent, Option
from cds_service.engine.instruments.registry import HSCORE, IEC_HS
from cds_service.engine.model import DrugEvent, EvaluationResult

Indicator = Literal["info", "warning", "critical"]
FIRST_LINE_CLASSES = frozenset({"anakinra", "corticosteroid"})
SECOND_LINE_AFTER = timedelta(hours=48)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the rules concluded for one result; the renderer reads only this and the result."""

    indicator: Indicator
    negative: bool
    concerning: tuple[str, ...]  # ids of concerning criteria that are met
    first_line_start: datetime | None
    given: frozenset[str]  # drug classes administered since the episode start
    refractory: bool
    high_grade: bool


def concerning_met(result: EvaluationResult, content: CardContent) -> tuple[str, ...]:
    met = {c.id for c in IEC_HS.result(result.instruments).criteria if c.status == "met"}
    return tuple(cid for cid in content.concerning_criteria if cid in met)


def _episode_start(result: EvaluationResult) -> datetime | None:
    return IEC_HS.result(result.instruments).onset or result.therapy.infusion_time


def episode_administrations(result: EvaluationResult) -> list[DrugEvent]:
    """Drug administrations in the current IEC-HS episode (since onset, else infusion), earliest first."""
    start = _episode_start(result)
    return [
        event
        for event in result.drugs
        if event.source == "administration"
        and (start is None or event.time >= start)
        and event.time <= result.at
    ]


def is_high_grade(result: EvaluationResult, content: CardContent) -> bool:
    grade = IEC_HS.result(result.instruments).grade
    return grade is not None and grade >= content.high_grade


def _indicator_rules(
    result: EvaluationResult, content: CardContent, concerning: tuple[str, ...]
) -> dict[str, Callable[[], bool]]:
    iec = IEC_HS.result(result.instruments)
    hscore = HSCORE.result(result.instruments)
    return {
        "iec_hs_met": lambda: iec.status == "met",
        "high_grade": lambda: is_high_grade(result, content),
        "indeterminate_concerning": lambda: iec.status == "indeterminate" and bool(concerning),
        "hscore_at_or_above_cutoff": lambda: hscore.score >= hscore.cutoff,
    }


def indicator(result: EvaluationResult, content: CardContent) -> Indicator:
    rules = _indicator_rules(result, content, concerning_met(result, content))
    if any(rules[name]() for name in content.indicator_critical):
        return "critical"
    if any(rules[name]() for name in content.indicator_warning):
        return "warning"
    return "info"


def assess(result: EvaluationResult, content: CardContent) -> Assessment:
    level = indicator(result, content)
    events = episode_administrations(result)
    first = [e for e in events if e.drug_class in FIRST_LINE_CLASSES]
    start = first[0].time if first else None
    still_met = IEC_HS.result(result.instruments).status == "met"
    return Assessment(
        indicator=level,
        negative=IEC_HS.result(result.instruments).status in {"not-met", "not-applicable"}
        and level == "info",
        concerning=concerning_met(result, content),
        first_line_start=start,
        given=frozenset(e.drug_class for e in events),
        refractory=still_met and start is not None and result.at - start >= SECOND_LINE_AFTER,
        high_grade=is_high_grade(result, content),
    )


def applies(option: Option, result: EvaluationResult, assessment: Assessment) -> bool:
    """Whether `option` applies now (its `when` rule)."""
    met = IEC_HS.result(result.instruments).status == "met"
    neuro = any(
        c.id == "neurotoxicity" and c.status == "met" for c in IEC_HS.result(result.instruments).criteria
    )
    checks: dict[str, bool] = {
        "always": True,
        "iec_hs_met": met,
        # The review proposes the standard regimen for patients without high-grade end organ damage or
        # concomitant neurotoxicity; grade >= 3 stands in for the former.
        "standard_corticosteroids": met and not assessment.high_grade and not neuro,
        "high_grade_or_refractory": met and (assessment.high_grade or assessment.refractory),
        "refractory": assessment.refractory,
        "salvage": assessment.refractory and assessment.high_grade,
    }
    return checks[option.when]
