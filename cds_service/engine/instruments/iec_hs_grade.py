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
from cds_service.engine.model import GradeFact

OXYGEN_LOOKBACK = timedelta(hours=24)  # "new" O2 need: none in the 24 h before onset [D]


@dataclass(frozen=True, slots=True)
class Grade:
    grade: int | None
    label: str | None
    basis: tuple[GradeFact, ...]
    missing: tuple[str, ...]
    is_minimum: bool


def _oxygen_facts(ctx: Context, start: datetime) -> list[GradeFact]:
    facts: list[GradeFact] = []
    flow = [lab for lab in ctx.values("o2_flow", start) if lab.value > 0]
    fio2 = [lab for lab in ctx.values("fio2", start) if lab.value > 21]
    hypoxia = [lab for lab in ctx.values("spo2", start) if lab.value < 88]
    before = [lab for lab in ctx.values("o2_flow", start - OXYGEN_LOOKBACK, start) if lab.value > 0]
    if before:
        return []
    for lab, text in [
        (flow[:1], "new supplemental oxygen"),
        (fio2[:1], "FiO2 above room air"),
        (hypoxia[:1], "hypoxia (SpO2 < 88%)"),
    ]:
        for item in lab:
            facts.append(
                GradeFact(
                    3, f"{text}: {item.original_value:g} {item.original_unit}", item.resource_id, item.time
                )
            )
    facts += [
        GradeFact(3, "supplemental oxygen started", p.resource_id, p.time)
        for p in ctx.procedures
        if p.kind == "oxygen_therapy" and p.time >= start
    ][:1]
    return facts


def _facts(ctx: Context, start: datetime) -> list[GradeFact]:
    facts: list[GradeFact] = []
    if ctx.patient.deceased:
        facts.append(
            GradeFact(
                5, "death recorded (Patient.deceased)", f"Patient/{ctx.patient.id}", ctx.patient.deceased_time
            )
        )
    for drug in ctx.drugs_with_role("vasopressor", start):
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
    facts += _oxygen_facts(ctx, start)
    baseline = ctx.baseline("creatinine")
    peak = ctx.worst("creatinine", start)
    if baseline is not None and peak is not None and peak.value >= 1.5 * baseline.value:
        facts.append(
            GradeFact(
                3,
                f"new renal insufficiency: creatinine {peak.value:g} vs baseline {baseline.value:g} mg/dL",
                peak.resource_id,
                peak.time,
            )
        )
    for drug in ctx.drugs_with_role("iec_hs_directed", start):
        facts.append(
            GradeFact(
                2, f"IEC-HS-directed therapy: {drug.text or drug.drug_class}", drug.resource_id, drug.time
            )
        )
    if bleeding.state != "present":
        for drug in replacement:
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
    facts = sorted(_facts(ctx, start), key=lambda f: -f.grade)
    value = facts[0].grade if facts else 1
    labels = {int(k): str(v) for k, v in grading["grades"].items()}
    missing = [(g, text) for g, text in _missing(ctx, start) if g > value]
    basis = tuple(f for f in facts if f.grade == value) or (
        GradeFact(
            1,
            "IEC-HS met; no IEC-HS-directed intervention, bleeding, new O2 need, renal insufficiency, vasopressor, ventilation, dialysis or death found",
        ),
    )
    return Grade(value, labels[value], basis, tuple(text for _, text in missing), bool(missing))
