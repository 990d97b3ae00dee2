"""Conditions read once, then seen as they were at an instant (nothing from the future).

A Condition counts at instant T only if it existed then: its onset (or, without one, its recordedDate) is at
or before T, and a recordedDate after T means it was entered later (a retrospective diagnosis did not exist
at T). Its status at T comes from the times it carries: an abatement after T means "active then", whatever
clinicalStatus says now (a record read at T+5 days would otherwise leak the later resolution into T).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cds_service.engine.events import clinical_status, crs_grade, finding_names, verification
from cds_service.engine.fhirutil import codings, concept_text, parse_datetime, period_start, resource_key
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import FindingRecord

NEVER_TRUE = frozenset({"entered-in-error"})
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionRecord:
    resource_id: str
    findings: tuple[str, ...]
    crs: bool
    crs_grade: int | None
    onset: datetime | None
    abatement: datetime | None
    recorded: datetime | None
    clinical: str  # clinicalStatus as the record says now
    verification: str
    severity: str  # severity codes and text, lower case (life-threatening bleeding)

    def existed_at(self, at: datetime) -> bool:
        start = self.onset or self.recorded
        return start is not None and start <= at and (self.recorded is None or self.recorded <= at)

    def abated_by(self, at: datetime) -> datetime | None:
        """The abatement if it happened at or before `at`."""
        return self.abatement if self.abatement is not None and self.abatement <= at else None


def read_conditions(kb: Knowledge, conditions: list[dict[str, Any]]) -> list[ConditionRecord]:
    records = []
    for resource in conditions:
        status = verification(resource)
        if status in NEVER_TRUE:
            continue
        is_crs, grade = crs_grade(kb, resource.get("code"))
        names = finding_names(kb, resource.get("code"))
        if not is_crs and not names:
            continue
        records.append(
            ConditionRecord(
                resource_id=resource_key(resource),
                findings=names,
                crs=is_crs,
                crs_grade=grade,
                onset=period_start(resource, "onsetDateTime", "onsetPeriod"),
                abatement=period_start(resource, "abatementDateTime", "abatementPeriod"),
                recorded=parse_datetime(resource.get("recordedDate")),
                clinical=clinical_status(resource),
                verification=status,
                severity=_severity(resource.get("severity")),
            )
        )
    records.sort(key=lambda r: r.onset or r.recorded or FAR_FUTURE)
    return records


def _severity(concept: Any) -> str:
    parts = [f"{system}|{code} {display}" for system, code, display in codings(concept)]
    return " ".join([*parts, concept_text(concept)]).lower()


def findings_at(records: list[ConditionRecord], at: datetime) -> dict[str, FindingRecord]:
    """Present if a matching Condition existed at `at` and is not refuted; absent only if refuted."""
    found: dict[str, FindingRecord] = {}
    for record in records:
        if not record.findings or not record.existed_at(at):
            continue
        state: Literal["present", "absent"] = "absent" if record.verification == "refuted" else "present"
        for name in record.findings:
            previous = found.get(name)
            if previous is None or (previous.state == "absent" and state == "present"):
                found[name] = FindingRecord(
                    name, state, record.resource_id, record.onset or record.recorded, record.severity
                )
    return found
