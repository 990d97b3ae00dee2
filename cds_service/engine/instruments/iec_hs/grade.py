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
from cds_service.engine.knowledge import OPERATORS
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
    """New O2 need (none in the look-back before onset) or hypoxia, from the data anchors."""
    flow = ctx.kb.threshold("o2_flow", anchors["o2_flow"])
    fio2 = ctx.kb.threshold("fio2", anchors["fio2"])
    hypoxia = ctx.kb.threshold("spo2", anchors["hypoxia_spo2"])
    lookback = timedelta(hours=float(anchors["new_oxygen_lookback_hours"]))
    if any(flow.test(lab.value) for lab in ctx.values("o2_flow", start - lookback, start)):
        return []
    facts: list[GradeFact] = []
    for analyte, threshold, text in (
        ("o2_flow", flow, "new supplemental oxygen"),
        ("fio2", fio2, "FiO2 above room air"),
        ("spo2", hypoxia, f"hypoxia (SpO2 {hypoxia.describe()})"),
    ):
        hits = [lab for lab in ctx.values(analyte, start) if threshold.test(lab.value)]
        if hits:
            lab = hits[0]
            facts.append(
                GradeFact(3, f"{text}: {lab.original_value:g} {lab.original_unit}", lab.resource_id, lab.time)
            )
    started = [p for p in ctx.procedures if p.kind == "oxygen_therapy" and p.time >= start]
    facts += [GradeFact(3, "supplemental oxygen started", p.resource_id, p.time) for p in started[:1]]
    return facts


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


def _facts(ctx: Context, start: datetime, anchors: dict[str, Any]) -> list[GradeFact]:
    facts: list[GradeFact] = []
    if ctx.patient.deceased:
        facts.append(
            GradeFact(
                5, "death recorded (Patient.deceased)", f"Patient/{ctx.patient.id}", ctx.patient.deceased_time
            )
        )
    for drug in _first_per_class(ctx.drugs_with_role("vasopressor", start)):
        facts.append(GradeFact(4, f"vasopressor given: {drug.text}", drug.resource_id, drug.time))
    for proc in ctx.procedures:
        if proc.time >= start and proc.kind == "mechanical_ventilation":
            facts.append(
                GradeFact(4, f"positive-pressure ventilation: {proc.text}", proc.resource_id, proc.time)
            )
        if proc.time >= start and proc.kind == "dialysis":
            facts.append(GradeFact(4, f"dialysis: {proc.text}", proc.resource_id, proc.time))
    bleeding = ctx.finding("bleeding")
    replacement = ctx.drugs_with_role("fibrinogen_replacement", start)
    transfusions = [
        p for p in ctx.procedures if p.time >= start and p.kind in {"transfusion", "cryo_transfusion"}
    ]
    if (
        bleeding.state == "present"
        and (bleeding.onset is None or bleeding.onset >= start)
        and (replacement or transfusions)
    ):
        facts.append(GradeFact(3, "bleeding with transfusion", bleeding.resource_id, bleeding.onset))
    facts += _oxygen_facts(ctx, start, anchors)
    facts += _renal_fact(ctx, start, anchors)
    for drug in _first_per_class(ctx.drugs_with_role("iec_hs_directed", start)):
        facts.append(
            GradeFact(
                2, f"IEC-HS-directed therapy: {drug.text or drug.drug_class}", drug.resource_id, drug.time
            )
        )
    if bleeding.state != "present":
        for drug in _first_per_class(replacement):
            facts.append(
                GradeFact(
                    2,
                    f"fibrinogen replacement without recorded bleeding: {drug.text}",
                    drug.resource_id,
                    drug.time,
                )
            )
    return facts


def _missing(ctx: Context, start: datetime) -> list[tuple[int, str]]:
    missing: list[tuple[int, str]] = []
    if ctx.patient.id is None:
        missing.append((5, "Patient resource (vital status)"))
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
