"""The patient's record, read once: everything that does not depend on the evaluation instant.

Collecting the resources, normalizing every Observation, reading drugs, procedures, Conditions, infusions
and flowsheet rows happens here, once; engine.evaluate then looks at the record as it was at each
instant (`evaluate_at`), which is cheap. A course (many instants) therefore costs one read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.conditions import ConditionRecord, read_conditions
from cds_service.engine.config import EngineConfig
from cds_service.engine.events import drug_events, procedure_events
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DataIssue, DrugEvent, LabValue, ProcedureEvent
from cds_service.engine.observations import ObservationNormalizer
from cds_service.engine.resources import collect
from cds_service.engine.rows import Rows, read_rows
from cds_service.engine.timeline import Infusion, infusions


@dataclass(slots=True, kw_only=True)
class Record:
    kb: Knowledge
    config: EngineConfig
    resources_seen: int
    issues: tuple[DataIssue, ...]  # from collecting and normalizing (the same at every instant)
    fallback_ranges: tuple[str, ...]
    labs: dict[str, list[LabValue]]  # every normalized value, each series time-sorted
    drugs: list[DrugEvent]  # by start
    procedures: list[ProcedureEvent]  # by start
    infusions: list[Infusion]  # by time
    conditions: list[ConditionRecord]
    rows: Rows
    patients: list[dict[str, Any]]
    supplied_types: frozenset[str]
    data_times: list[datetime] = field(default_factory=list)  # when anything new was recorded (sorted)
    # analyte -> the longest delay between a value's time and its release (issued), where any is later
    release_lags: dict[str, timedelta] = field(default_factory=dict)


def read_record(data: Any, *, knowledge: Knowledge, config: EngineConfig | None = None) -> Record:
    """Read `data` (a Bundle of any type, a resource, a list, or a CDS Hooks prefetch dict) once.

    Raises InputError if it is none of these."""
    kb = knowledge
    resources = collect(data)
    issues = list(resources.issues)
    observations = resources.by_type.get("Observation", [])
    normalizer = ObservationNormalizer(kb)
    labs = normalizer.normalize(observations)
    issues += normalizer.issues
    drugs = drug_events(kb, resources, issues)
    procedures = procedure_events(kb, resources.by_type.get("Procedure", []))
    conditions = read_conditions(kb, resources.by_type.get("Condition", []))
    rows = read_rows(kb, observations)
    return Record(
        kb=kb,
        config=config or EngineConfig.from_knowledge(kb),
        resources_seen=resources.seen,
        issues=tuple(issues),
        fallback_ranges=tuple(sorted(normalizer.fallback_analytes)),
        labs=labs,
        drugs=drugs,
        procedures=procedures,
        infusions=infusions(kb, resources),
        conditions=conditions,
        rows=rows,
        patients=list(resources.by_type.get("Patient", [])),
        supplied_types=frozenset(t for t, items in resources.by_type.items() if items),
        data_times=_data_times(labs, drugs, procedures, conditions, rows),
        release_lags=_release_lags(labs),
    )


def _release_lags(labs: dict[str, list[LabValue]]) -> dict[str, timedelta]:
    lags: dict[str, timedelta] = {}
    for analyte, series in labs.items():
        delays = [lab.issued - lab.time for lab in series if lab.issued is not None]
        if delays:
            lags[analyte] = max(delays)
    return lags


def _data_times(
    labs: dict[str, list[LabValue]],
    drugs: list[DrugEvent],
    procedures: list[ProcedureEvent],
    conditions: list[ConditionRecord],
    rows: Rows,
) -> list[datetime]:
    """Every instant at which the record changed (a value, a drug, a procedure start or end, a Condition
    onset or abatement, a flowsheet row): where a replay must look."""
    times = {lab.issued or lab.time for series in labs.values() for lab in series}
    times |= {d.time for d in drugs} | {d.end for d in drugs if d.end is not None}
    times |= {p.time for p in procedures} | {p.end for p in procedures if p.end is not None}
    times |= {t for c in conditions for t in (c.onset, c.abatement, c.recorded) if t is not None}
    times |= {r.issued or r.time for r in rows.devices} | {r.issued or r.time for r in rows.documented}
    return sorted(times)
