"""What the CRS course is built from, as known at the evaluation instant (every list cut at `at`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.engine.conditions import ConditionRecord
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DrugEvent, LabValue, ProcedureEvent
from cds_service.engine.rows import DeviceRow, DocumentedRow


@dataclass(frozen=True, slots=True)
class CrsInputs:
    kb: Knowledge
    at: datetime
    infusions: tuple[datetime, ...]  # immune effector cell infusions at or before `at`
    labs: dict[str, list[LabValue]]  # temperature, blood pressure, oxygen, ferritin... (time-sorted)
    devices: list[DeviceRow]
    procedures: list[ProcedureEvent]
    drugs: list[DrugEvent]
    documented: list[DocumentedRow]
    conditions: list[ConditionRecord]
    age_years: float | None

    @property
    def doc(self) -> dict[str, Any]:
        return self.kb.criteria["astct_crs"]

    def series(self, analyte: str) -> list[LabValue]:
        return self.labs.get(analyte, [])
