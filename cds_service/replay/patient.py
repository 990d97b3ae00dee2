"""One patient's replay: the record read once, then the engine and the patient-view card at each instant.

The instants are every instant new data arrived (``Record.data_times``) from the first immune effector cell
infusion on, and every `step` from that infusion, up to the end of the data or `horizon` after the infusion.
Each evaluation sees only what was on record then (``evaluate_at``); the card is what the patient-view hook
would have returned at that instant (the hook's own renderer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cds_service.cards.content import CardContent
from cds_service.cards.render import CardContext, render_patient_view
from cds_service.engine.evaluate import evaluate_at
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult
from cds_service.engine.record import Record
from cds_service.hooks.services import build_registry

DAY = timedelta(days=1)
AT_LEAST_POSSIBLE = frozenset({"possible", "met"})
CARD_BASE_URL = "http://replay.invalid"  # card links are not followed in a replay; identity is the summary


@dataclass(frozen=True, slots=True)
class Instant:
    at: datetime
    day: float  # days after the first infusion
    status: str  # IEC-HS: met, possible, not-met, indeterminate, not-applicable
    grade: int | None
    crs_status: str
    new_data: bool  # new data arrived at this instant (else a step instant only)
    cards: tuple[tuple[str, str], ...]  # (indicator, summary) of each card the hook would show


@dataclass(slots=True)
class PatientReplay:
    patient_id: str
    infusion: datetime
    instants: list[Instant] = field(default_factory=list)

    def first(self, statuses: frozenset[str]) -> datetime | None:
        return next((i.at for i in self.instants if i.status in statuses), None)

    @property
    def first_possible(self) -> datetime | None:
        """The first instant at "possible" or above."""
        return self.first(AT_LEAST_POSSIBLE)

    @property
    def first_met(self) -> datetime | None:
        return self.first(frozenset({"met"}))

    @property
    def max_grade(self) -> int | None:
        return max((i.grade for i in self.instants if i.grade is not None), default=None)

    def cards_per_day(self) -> list[int]:
        """Distinct cards (indicator + summary) shown on each day after infusion (index = day)."""
        days: dict[int, set[tuple[str, str]]] = {}
        for instant in self.instants:
            days.setdefault(int(instant.day // 1), set()).update(instant.cards)
        last = max(days, default=-1)
        return [len(days.get(day, ())) for day in range(last + 1)]


CardRenderer = Callable[[EvaluationResult, str], list[dict[str, Any]]]


def card_renderer(kb: Knowledge, content: CardContent) -> CardRenderer:
    """The patient-view cards for a result, as the hook renders them (no data gaps: the record is whole)."""
    service = next(s.id for s in build_registry(kb).services if s.hook == "patient-view")

    def render(result: EvaluationResult, patient_id: str) -> list[dict[str, Any]]:
        context = CardContext(
            service_id=service,
            hook="patient-view",
            base_url=CARD_BASE_URL,
            smart_launch_url=None,
            data_gaps=(),
            uuid_factory=lambda: "00000000-0000-4000-8000-000000000000",
            fhir_server=None,
            patient_id=patient_id,
        )
        return render_patient_view(result, context, content=content, knowledge=kb)

    return render


def instants(record: Record, *, step: timedelta, horizon: timedelta | None) -> list[tuple[datetime, bool]]:
    """(instant, new data arrived) from the first infusion: every data arrival and every `step`."""
    start = record.infusions[0].time
    end = max(record.data_times[-1], start) if record.data_times else start
    if horizon is not None:
        end = min(end, start + horizon)
    arrivals = {t for t in record.data_times if start <= t <= end}
    steps = {start + k * step for k in range(int((end - start) / step) + 1)}
    return [(at, at in arrivals) for at in sorted(arrivals | steps)]


def replay_record(
    record: Record,
    patient_id: str,
    render: CardRenderer,
    *,
    step: timedelta,
    horizon: timedelta | None,
) -> PatientReplay | None:
    """The patient's course, or None without an immune effector cell infusion on record."""
    if not record.infusions:
        return None
    infusion = record.infusions[0].time
    replay = PatientReplay(patient_id, infusion)
    for at, new_data in instants(record, step=step, horizon=horizon):
        result = evaluate_at(record, at)
        iec = IEC_HS.result(result.instruments)
        cards = tuple((str(c["indicator"]), str(c["summary"])) for c in render(result, patient_id))
        replay.instants.append(
            Instant(at, (at - infusion) / DAY, iec.status, iec.grade, result.crs_status, new_data, cards)
        )
    return replay
