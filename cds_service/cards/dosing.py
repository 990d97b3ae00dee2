"""Dose text for a patient: the review's verbatim dosing by population, plus arithmetic where it is allowed.

Arithmetic is shown only for doses the review gives per kg (with a recorded weight) or per m² (with a body
surface area from a recorded height and weight, Mosteller formula; project-derived). Fixed-mg doses are never
recomputed and no single dose is ever chosen: the prescriber picks within the review's range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cds_service.cards.checks import amount_text
from cds_service.cards.content import Amount, Dose, Option
from cds_service.engine.model import EvaluationResult, PatientInfo

POPULATION_LABELS = {
    "any": "",
    "adult": "Adults",
    "pediatric": "Pediatric",
    "age_ge_14": "Age 14 y or older",
    "age_lt_14": "Age under 14 y",
}


@dataclass(frozen=True, slots=True)
class Body:
    weight_kg: float | None
    weight_date: str | None
    height_cm: float | None
    bsa_m2: float | None  # Mosteller, rounded to 0.01 m²; None without both height and weight


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m²) = sqrt(height cm x weight kg / 3600): Mosteller formula, project-derived use."""
    return round(math.sqrt(height_cm * weight_kg / 3600.0), 2)


def body_of(result: EvaluationResult) -> Body:
    weight = result.patient.weight_kg
    heights = [lab for lab in result.latest if lab.analyte == "body_height"]
    height = heights[-1].value if heights else None
    when = result.patient.weight_time
    bsa = mosteller_bsa(height, weight) if height and weight and height > 0 and weight > 0 else None
    return Body(weight, when.date().isoformat() if when else None, height, bsa)


def _population_fits(population: str, patient: PatientInfo) -> bool | None:
    """True/False when the age decides it; None when age is unknown (show every population)."""
    age = patient.age_years
    if population == "any":
        return True
    if population in {"adult", "pediatric"}:
        if patient.pediatric is None:
            return None
        return patient.pediatric == (population == "pediatric")
    if age is None:
        return None
    return age >= 14 if population == "age_ge_14" else age < 14


def doses_for(option: Option, patient: PatientInfo) -> tuple[Dose, ...]:
    """The option's doses for this patient; every population's dose when the age is unknown."""
    return tuple(d for d in option.dosing if _population_fits(d.population, patient) is not False)


def _num(value: float) -> str:
    return f"{round(value, 1):g}"


def _product(amount: Amount, factor: float, unit: str, factor_unit: str) -> str:
    result = "–".join(_num(mg * factor) for mg in amount.mg)
    # The factor is shown as used (recorded weight, BSA to 0.01 m²) so the arithmetic checks by eye.
    return f"{amount_text(amount.mg)} mg/{unit} x {factor:g} {factor_unit} = {result} mg ({amount.label})"


def arithmetic(dose: Dose, body: Body) -> tuple[str, ...]:
    """Worked arithmetic for the per-kg and per-m² doses the review gives, when the inputs are recorded."""
    lines: list[str] = []
    if body.weight_kg is not None:
        lines.extend(_product(a, body.weight_kg, "kg", "kg") for a in dose.per_kg)
    if body.bsa_m2 is not None:
        lines.extend(_product(a, body.bsa_m2, "m²", "m²") for a in dose.per_m2)
    return tuple(lines)


def labelled(dose: Dose) -> str:
    label = POPULATION_LABELS[dose.population]
    return f"{label}: {dose.text}" if label else dose.text


def dose_line(dose: Dose, body: Body) -> str:
    """'Pediatric: up to 10 mg/kg ... (10 mg/kg x 25 kg = 250 mg (IV daily, upper limit); ...)'."""
    worked = arithmetic(dose, body)
    return f"{labelled(dose)} ({'; '.join(worked)})" if worked else labelled(dose)


def needs_weight(option: Option) -> bool:
    return any(d.per_kg for d in option.dosing)


def needs_bsa(option: Option) -> bool:
    return any(d.per_m2 for d in option.dosing)
