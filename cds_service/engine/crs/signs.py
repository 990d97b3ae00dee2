"""The signs the ASTCT 2019 CRS grade reads, from raw data: fever, hypotension and the vasopressors it
needs, hypoxia and the oxygen support it needs (Lee 2019 [R]; thresholds the consensus leaves open are [D]).

A sign covers [start, end] (a reading is an instant; an infusion or a ventilation period an interval) and
carries the grade it supports on its own: fever 1; hypotension 2, or 3 with one vasopressor (with or
without vasopressin), 4 with several (vasopressin excluded); oxygen by device or flow level 2, 3 or 4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cds_service.engine.crs.inputs import CrsInputs
from cds_service.engine.model import DrugEvent

SignKind = Literal["fever", "hypotension", "vasopressor", "oxygen"]


@dataclass(frozen=True, slots=True)
class Sign:
    kind: SignKind
    start: datetime
    end: datetime
    grade: int
    description: str
    resource_id: str


def fever_signs(inputs: CrsInputs) -> list[Sign]:
    threshold = inputs.kb.threshold("temperature", inputs.doc["fever"])
    return [
        Sign("fever", lab.time, lab.time, 1, f"temperature {lab.value:.1f} C", lab.resource_id)
        for lab in inputs.series("temperature")
        if threshold.test(lab.value)
    ]


def hypotension_limits(inputs: CrsInputs) -> tuple[Callable[[float], bool], Callable[[float], bool]]:
    """(systolic, mean) tests of hypotension for this patient: adult systolic < 90 or mean < 65 mmHg;
    children by the PALS age-based systolic limit and no mean-pressure rule [D]. Decided once per course."""
    spec = inputs.doc["hypotension"]
    age = inputs.age_years
    adult = age is None or age >= 18
    mean = inputs.kb.threshold("map", spec["adult_mean"]).test if adult else _never
    if age is not None and age < float(spec["pediatric_adult_from_years"]):
        base = float(spec["pediatric_systolic_base"]["value"])
        years = int(age)  # PALS counts whole years of age
        limit = base + float(spec["pediatric_systolic_per_year"]) * years if years >= 1 else base
        return limit.__gt__, mean
    return inputs.kb.threshold("bp_systolic", spec["adult_systolic"]).test, mean


def _never(_value: float) -> bool:
    return False


def vasopressor_segments(inputs: CrsInputs) -> list[tuple[datetime, datetime, int, list[DrugEvent]]]:
    """(start, end, agents, events) for every stretch with the same vasopressor agents running; agents
    counts distinct agents other than vasopressin (vasopressin alone counts as one)."""
    running = [d for d in inputs.drugs if d.role == "vasopressor" and d.source == "administration"]
    # An administration charted as one instant runs for the configured hours [D] (criteria/astct_crs.yaml).
    point = timedelta(hours=float(inputs.doc["course"]["vasopressor_point_hours"]))
    spans = [(d.time, _end(d, inputs.at, point), d) for d in running]
    cuts = sorted({t for s, e, _ in spans for t in (s, e)})
    segments = []
    for left, right in zip(cuts, cuts[1:], strict=False):
        on = [d for s, e, d in spans if s <= left and e >= right]
        if not on:
            continue
        agents = {d.drug_class for d in on if d.drug_class not in inputs.kb.vasopressin_classes}
        segments.append((left, right, max(1, len(agents)), on))
    return segments


def _end(drug: DrugEvent, at: datetime, point: timedelta) -> datetime:
    if drug.period:
        return min(drug.end, at) if drug.end is not None else at
    return min(drug.time + point, at)


def hypotension_signs(inputs: CrsInputs) -> list[Sign]:
    grades = inputs.doc["hypotension_grades"]
    systolic, mean = hypotension_limits(inputs)
    tests = {"bp_systolic": systolic, "map": mean}
    signs = [
        Sign(
            "hypotension",
            lab.time,
            lab.time,
            int(grades["no_vasopressor"]),
            f"{'mean' if lab.analyte == 'map' else 'systolic'} pressure {lab.value:g} mmHg",
            lab.resource_id,
        )
        for analyte, hypotensive in tests.items()
        for lab in inputs.series(analyte)
        if hypotensive(lab.value)
    ]
    for start, end, agents, on in vasopressor_segments(inputs):
        grade = int(grades["several_vasopressors"] if agents > 1 else grades["one_vasopressor"])
        names = ", ".join(sorted({d.text or d.drug_class for d in on}))
        signs.append(
            Sign("vasopressor", start, end, grade, f"vasopressor running: {names}", on[0].resource_id)
        )
    return signs


def oxygen_signs(inputs: CrsInputs) -> list[Sign]:
    """Oxygen support by device rows, flow (<= the low-flow limit: 2, above: 3), FiO2 above room air (at
    least 2 [D]) and positive-pressure procedures (4)."""
    kb = inputs.kb
    levels = kb.oxygen.levels
    low_flow = kb.threshold("o2_flow", kb.oxygen.low_flow_max)
    signs = [
        Sign(
            "oxygen",
            row.time,
            row.time,
            row.level.grade,
            f"oxygen: {row.text or row.level.display}",
            row.resource_id,
        )
        for row in inputs.devices
        if row.level.grade > 0
    ]
    for lab in inputs.series("o2_flow"):
        if lab.value > 0:
            grade = (
                levels["low_flow"].grade if low_flow.test(lab.value) else levels["high_flow_or_mask"].grade
            )
            signs.append(
                Sign("oxygen", lab.time, lab.time, grade, f"oxygen {lab.value:g} L/min", lab.resource_id)
            )
    signs += [
        Sign("oxygen", lab.time, lab.time, levels["low_flow"].grade, f"FiO2 {lab.value:g} %", lab.resource_id)
        for lab in inputs.series("fio2")
        if lab.value > 21
    ]
    for proc in inputs.procedures:
        if proc.kind == "mechanical_ventilation":
            end = min(proc.end, inputs.at) if proc.end is not None else inputs.at
            grade = levels["positive_pressure"].grade
            signs.append(
                Sign("oxygen", proc.time, end, grade, f"positive pressure: {proc.text}", proc.resource_id)
            )
    return signs


def all_signs(inputs: CrsInputs) -> list[Sign]:
    signs = fever_signs(inputs) + hypotension_signs(inputs) + oxygen_signs(inputs)
    return sorted((s for s in signs if s.start <= inputs.at), key=lambda s: (s.start, -s.grade))
