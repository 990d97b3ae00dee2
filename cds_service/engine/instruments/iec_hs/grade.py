"""IEC-HS severity grade 1-5 (Hines 2023 grading; UNVERIFIED: reference 5.3, not checked against the table).

The grade is the highest one the supplied data supports, counted from the IEC-HS onset estimate. When data
that could raise it were not supplied (no MedicationAdministrations, no Procedures, no oxygen data, ...),
`is_minimum` is true and `missing` names those facts. Anchors (reference 5.3, "computable anchors"):
5 death; 4 vasopressors, positive-pressure ventilation, dialysis; 3 bleeding with transfusion, new O2 need or
hypoxia, new renal insufficiency; 2 IEC-HS-directed drugs, or cryoprecipitate/fibrinogen without bleeding;
1 none of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.context import Context
from cds_service.engine.knowledge import OPERATORS, Threshold
from cds_service.engine.model import DrugEvent, GradeFact
from cds_service.engine.units import scaled

NO_INTERVENTION = (
    "IEC-HS met; no IEC-HS-directed intervention, bleeding, new O2 need, renal insufficiency, "
    "vasopressor, ventilation, dialysis or death found"
)


@dataclass(frozen=True, slots=True)
class Grade:
    grade: int | None
    label: str | None
    basis: tuple[GradeFact, ...]
    missing: tuple[str, ...]
    is_minimum: bool


def _oxygen_facts(ctx: Context, start: datetime, anchors: dict[str, Any]) -> list[GradeFact]:
    """Oxygen after onset: positive pressure (4); hypoxia (SpO2 below the anchor, on oxygen or not), new
    oxygen, or oxygen escalated above the level of the look-back before onset (3). Oxygen already running
    before onset no longer hides what follows (reference 5.3 "new-onset hypoxia")."""
    flow = ctx.kb.threshold("o2_flow", anchors["o2_flow"])
    fio2 = ctx.kb.threshold("fio2", anchors["fio2"])
    hypoxia = ctx.kb.threshold("spo2", anchors["hypoxia_spo2"])
    lookback = timedelta(hours=float(anchors["new_oxygen_lookback_hours"]))
    before = max((p[0] for p in _support_points(ctx, start - lookback, start, flow, fio2)), default=0)
    facts: list[GradeFact] = []
    low = [lab for lab in ctx.values("spo2", start) if hypoxia.test(lab.value)]
    if low:
        text = f"hypoxia (SpO2 {hypoxia.describe()}): {low[0].original_value:g} {low[0].original_unit}"
        facts.append(GradeFact(3, text, low[0].resource_id, low[0].time))
    levels = _support_points(ctx, start, ctx.at, flow, fio2)
    above = [(level, text, rid, time) for level, text, rid, time in levels if level > before]
    if above:
        level, text, rid, time = max(above, key=lambda item: (item[0], -item[3].timestamp()))
        word = "new supplemental oxygen" if before == 0 else "oxygen support escalated"
        grade = 4 if level >= POSITIVE_PRESSURE else 3
        facts.append(GradeFact(grade, f"{word}: {text}", rid, time))
    return facts


POSITIVE_PRESSURE = 4  # the oxygen support level of CPAP, BiPAP and mechanical ventilation


def _support_points(
    ctx: Context, start: datetime, end: datetime, flow: Threshold, fio2: Threshold
) -> list[tuple[int, str, str | None, datetime]]:
    """(level, description, resource, time) of every oxygen support fact in [start, end]: device rows
    (their ASTCT level), flow and FiO2 above room air (level 2 at least), oxygen and ventilation
    procedures."""
    points: list[tuple[int, str, str | None, datetime]] = [
        (row.level.grade, row.text or row.level.display, row.resource_id, row.time)
        for row in ctx.devices
        if start <= row.time <= end and row.level.grade > 0
    ]
    points += [
        (2, f"{lab.original_value:g} {lab.original_unit}", lab.resource_id, lab.time)
        for analyte, threshold in (("o2_flow", flow), ("fio2", fio2))
        for lab in ctx.values(analyte, start, end)
        if threshold.test(lab.value)
    ]
    for proc in ctx.procedures:
        running = proc.time <= end and (proc.end is None or proc.end >= start)
        if running and proc.kind in {"oxygen_therapy", "mechanical_ventilation"}:
            level = POSITIVE_PRESSURE if proc.kind == "mechanical_ventilation" else 2
            points.append((level, proc.text or proc.kind, proc.resource_id, max(proc.time, start)))
    return points


def _renal_fact(ctx: Context, start: datetime, anchors: dict[str, Any]) -> list[GradeFact]:
    baseline = ctx.baseline("creatinine")
    peak = ctx.worst("creatinine", start)
    spec = anchors["renal_creatinine_baseline_multiple"]
    if (
        baseline is None
        or peak is None
        or not OPERATORS[spec["op"]](peak.value, scaled(float(spec["value"]), baseline.value))
    ):
        return []
    text = f"new renal insufficiency: creatinine {peak.value:g} vs baseline {baseline.value:g} mg/dL"
    return [GradeFact(3, text, peak.resource_id, peak.time)]


def _first_per_class(drugs: list[DrugEvent]) -> list[DrugEvent]:
    """The first administration of each drug class: repeated doses add no new grading fact."""
    first: dict[str, DrugEvent] = {}
    for drug in drugs:
        first.setdefault(drug.drug_class, drug)
    return list(first.values())


def _running_since(drug: DrugEvent, start: datetime) -> bool:
    """Given at or after `start`, or an infusion still running at `start`."""
    return drug.time >= start or (drug.period and (drug.end is None or drug.end >= start))


def _death(ctx: Context, start: datetime) -> list[GradeFact]:
    """Grade 5 needs a death after the IEC-HS onset; a death without a time cannot be placed."""
    when = ctx.patient.deceased_time
    if not ctx.patient.deceased or when is None or when < start:
        return []
    return [
        GradeFact(
            5, "death recorded after the IEC-HS onset (Patient.deceased)", f"Patient/{ctx.patient.id}", when
        )
    ]


def _bleeding(ctx: Context, start: datetime, anchors: dict[str, Any], replaced: bool) -> list[GradeFact]:
    """Bleeding after onset: life-threatening (by the Condition's severity [D]) = 4; with a transfusion,
    cryoprecipitate or fibrinogen concentrate = 3."""
    bleeding = ctx.finding("bleeding")
    if bleeding.state != "present" or (bleeding.onset is not None and bleeding.onset < start):
        return []
    patterns = anchors["life_threatening_bleeding"]["severity_patterns"]
    if any(pattern in bleeding.severity for pattern in patterns):
        return [
            GradeFact(
                4, "life-threatening bleeding (Condition severity)", bleeding.resource_id, bleeding.onset
            )
        ]
    transfused = replaced or any(p.time >= start and p.kind == "transfusion" for p in ctx.procedures)
    return (
        [GradeFact(3, "bleeding with transfusion", bleeding.resource_id, bleeding.onset)]
        if transfused
        else []
    )


def _replacement(ctx: Context, start: datetime) -> list[GradeFact]:
    """Cryoprecipitate or fibrinogen concentrate after onset, as a drug or as a transfusion procedure."""
    facts = [
        GradeFact(
            2, f"fibrinogen replacement without recorded bleeding: {drug.text}", drug.resource_id, drug.time
        )
        for drug in _first_per_class(ctx.drugs_with_role("fibrinogen_replacement", start))
    ]
    procedures = [p for p in ctx.procedures if p.time >= start and p.kind == "cryo_transfusion"]
    facts += [
        GradeFact(2, f"fibrinogen replacement without recorded bleeding: {p.text}", p.resource_id, p.time)
        for p in procedures[:1]
    ]
    return facts


def _facts(ctx: Context, start: datetime, anchors: dict[str, Any]) -> list[GradeFact]:
    facts = _death(ctx, start)
    pressors = [d for d in ctx.drugs if d.role == "vasopressor" and _running_since(d, start)]
    for drug in _first_per_class(pressors):
        facts.append(GradeFact(4, f"vasopressor given: {drug.text}", drug.resource_id, drug.time))
    for proc in ctx.procedures:
        if proc.time >= start and proc.kind == "dialysis":
            facts.append(GradeFact(4, f"dialysis: {proc.text}", proc.resource_id, proc.time))
    replacement = _replacement(ctx, start)
    facts += _bleeding(ctx, start, anchors, bool(replacement))
    facts += _oxygen_facts(ctx, start, anchors)
    facts += _renal_fact(ctx, start, anchors)
    for drug in _first_per_class(ctx.drugs_with_role("iec_hs_directed", start)):
        text = f"IEC-HS-directed therapy: {drug.text or drug.drug_class}"
        facts.append(GradeFact(2, text, drug.resource_id, drug.time))
    if ctx.finding("bleeding").state != "present":
        facts += replacement
    return facts


def _missing(ctx: Context, start: datetime) -> list[tuple[int, str]]:
    missing: list[tuple[int, str]] = []
    if ctx.patient.id is None:
        missing.append((5, "Patient resource (vital status)"))
    elif ctx.patient.deceased and ctx.patient.deceased_time is None:
        missing.append((5, "time of death (grade 5 needs a death after the IEC-HS onset)"))
    if "MedicationAdministration" not in ctx.supplied_types:
        missing.append((4, "MedicationAdministration resources (vasopressors, IEC-HS-directed drugs)"))
    if "Procedure" not in ctx.supplied_types:
        missing.append((4, "Procedure resources (ventilation, dialysis, transfusion)"))
    if not ctx.values("spo2", start) and not ctx.values("o2_flow", start):
        missing.append((3, "oxygen saturation / oxygen support since onset"))
    if ctx.baseline("creatinine") is None or ctx.worst("creatinine", start) is None:
        missing.append((3, "creatinine since onset and a baseline creatinine"))
    if "Condition" not in ctx.supplied_types:
        missing.append((3, "Condition resources (bleeding)"))
    return missing


def grade(ctx: Context, status: str, onset: datetime | None, grading: dict[str, Any]) -> Grade:
    if status != "met":
        reason = (
            "IEC-HS not established: no grade"
            if status == "not-met"
            else "IEC-HS not established (missing data): no grade"
        )
        return Grade(None, None, (), (reason,), False)
    start = onset or ctx.window_start
    facts = sorted(_facts(ctx, start, grading["anchors"]), key=lambda f: -f.grade)
    value = facts[0].grade if facts else 1
    labels = {int(k): str(v) for k, v in grading["grades"].items()}
    missing = [(g, text) for g, text in _missing(ctx, start) if g > value]
    basis = tuple(f for f in facts if f.grade == value) or (
        GradeFact(
            1,
            NO_INTERVENTION,
        ),
    )
    return Grade(value, labels[value], basis, tuple(text for _, text in missing), bool(missing))
