"""Dose text for a patient: the seed's verbatim dosing by population, plus arithmetic where it is allowed.

Arithmetic is shown only for doses the seed gives per kg (with a recorded weight) or per m² (with a body
surface area from a recorded height and weight, Mosteller formula; project-derived). A per-dose amount given
"every n h" is shown with its daily total next to any per-day ceiling of the same regimen, so "up to 10 mg/kg
daily" and "4 mg/kg every 6 h" (16 mg/kg/day) are never read side by side without the total. Fixed-mg doses
are never recomputed and no single dose is ever chosen: the prescriber picks within the seed's range.
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


def _range(values: list[float]) -> str:
    return "–".join(f"{round(v, 1):,g}" for v in values)


def _worked(amount: Amount, factor: float, unit: str) -> str:
    """'4 mg/kg x 25.3 kg = 101.2 mg per dose, every 6 h = 404.8 mg/day (16 mg/kg/day)'."""
    per = f"mg/{unit}"
    head = f"{amount_text(amount.mg)} {per} x {factor:g} {unit} = "
    total = [mg * factor for mg in amount.mg]
    if amount.basis == "day":
        return f"{amount.label}: up to {head}{_range(total)} mg/day"
    line = f"{amount.label}: {head}{_range(total)} mg per dose"
    if amount.every_hours:
        per_day = 24 / amount.every_hours
        line += (
            f" = {_range([t * per_day for t in total])} mg/day"
            f" ({_range([mg * per_day for mg in amount.mg])} {per}/day)"
        )
    return line


def arithmetic(dose: Dose, body: Body) -> tuple[str, ...]:
    """Worked arithmetic for the per-kg and per-m² doses the seed gives, when the inputs are recorded; a
    per-dose amount with its interval also without a weight gets its per-day total in mg/kg."""
    lines: list[str] = []
    for amounts, factor, unit in ((dose.per_kg, body.weight_kg, "kg"), (dose.per_m2, body.bsa_m2, "m²")):
        for amount in amounts:
            if factor is not None:
                lines.append(_worked(amount, factor, unit))
            elif amount.every_hours:
                per_day = 24 / amount.every_hours
                lines.append(f"{amount.label}: {_range([mg * per_day for mg in amount.mg])} mg/{unit}/day")
    return tuple(lines)


def labelled(dose: Dose) -> str:
    label = POPULATION_LABELS[dose.population]
    return f"{label}: {dose.text}" if label else dose.text


def dose_line(dose: Dose, body: Body) -> str:
    """'Pediatric: up to 10 mg/kg ... (IV daily: 10 mg/kg x 25 kg = 250 mg/day; ...)'."""
    worked = arithmetic(dose, body)
    return f"{labelled(dose)} ({'; '.join(worked)})" if worked else labelled(dose)


def needs_weight(option: Option) -> bool:
    return any(d.per_kg for d in option.dosing)


def needs_bsa(option: Option) -> bool:
    return any(d.per_m2 for d in option.dosing)
