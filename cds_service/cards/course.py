"""Therapy already given: IEC-HS- and CRS-directed (IL-6) drugs since the infusion, one course per drug.

A course is read from MedicationAdministrations (first and last dose, number of doses) and from orders
(MedicationRequest, status active). It is "running" when its last dose is within `running_within_hours` of the
evaluation instant or an order for it is active [D] (cards/templates.yaml `speak.running_within_hours`).
Corticosteroids are one drug class in the engine; the course names the agent its records name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_service.cards.content import CardContent
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DrugEvent, EvaluationResult

DIRECTED_ROLES = frozenset({"iec_hs_directed", "il6_directed"})
ACTIVE_ORDER = frozenset({"active", "on-hold", "draft"})


@dataclass(frozen=True, slots=True)
class Course:
    drug_class: str
    name: str
    first: datetime  # first administration (or the order's date without one)
    last: datetime | None  # last administration; None when only ordered
    doses: int
    running: bool
    ordered: bool  # an active order exists

    @property
    def given(self) -> bool:
        return self.doses > 0


def _agent(kb: Knowledge, content: CardContent, cls: str, events: list[DrugEvent]) -> str:
    """The drug's name for people; for a class of several agents (corticosteroids) the one recorded."""
    if cls != "corticosteroid":
        return content.drug_names.get(cls, cls)
    texts = " ".join(e.text.lower() for e in events)
    names = [name for name, c in kb.drug_names if c == cls and name in texts]
    return names[-1].capitalize() if names else content.drug_names.get(cls, cls)


def courses(result: EvaluationResult, kb: Knowledge, content: CardContent) -> tuple[Course, ...]:
    """Every directed drug given or ordered since the infusion (any time when the infusion is unknown)."""
    since = result.therapy.infusion_time
    recent = timedelta(hours=content.running_within_hours)
    by_class: dict[str, list[DrugEvent]] = {}
    for event in result.drugs:
        if (
            event.role in DIRECTED_ROLES
            and event.time <= result.at
            and (since is None or event.time >= since)
        ):
            by_class.setdefault(event.drug_class, []).append(event)
    out: list[Course] = []
    for cls, events in by_class.items():
        given = [e for e in events if e.source == "administration"]
        orders = [e for e in events if e.source == "request" and (e.status or "active") in ACTIVE_ORDER]
        if not given and not orders:
            continue
        last = max((e.end or e.time if e.period else e.time) for e in given) if given else None
        infusing = any(e.period and e.end is None for e in given)
        running = bool(orders) or infusing or (last is not None and result.at - last <= recent)
        first = min(e.time for e in (given or orders))
        out.append(
            Course(cls, _agent(kb, content, cls, events), first, last, len(given), running, bool(orders))
        )
    return tuple(sorted(out, key=lambda c: c.first))


def running(all_courses: tuple[Course, ...], cls: str) -> Course | None:
    return next((c for c in all_courses if c.drug_class == cls and c.running), None)
