"""Observation -> LabValue: LOINC code to analyte, UCUM unit to canonical unit, status, time, ranges.

Lenient on shape, strict on meaning: an unknown or incompatible unit, a missing time or a non-numeric value
excludes the value and records a DataIssue; nothing is guessed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from cds_service.engine.catalog import LOINC, UCUM
from cds_service.engine.fhirutil import concept_text, number, period_start, resource_key
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DataIssue, LabValue
from cds_service.engine.units import UnitError

EXCLUDED_STATUSES = frozenset({"entered-in-error", "cancelled"})
FLAGGED_STATUSES = frozenset({"preliminary", "registered", "unknown"})
COMPARATORS = frozenset({"<", "<=", ">", ">="})


def _decimals(value: float) -> int:
    text = repr(value)
    if "e" in text or "E" in text:
        return 0
    return len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0


def _unit_of(quantity: dict[str, Any]) -> str | None:
    code = quantity.get("code")
    system = quantity.get("system")
    if isinstance(code, str) and (system is None or system == UCUM):
        return code
    unit = quantity.get("unit")
    if isinstance(unit, str):
        return unit
    return code if isinstance(code, str) else None


class ObservationNormalizer:
    """Normalizes Observations for one evaluation; collects issues and the fallback-range analytes."""

    def __init__(self, kb: Knowledge) -> None:
        self.kb = kb
        self.issues: list[DataIssue] = []
        self.fallback_analytes: set[str] = set()
        self._limits: dict[tuple[Any, ...], float | None] = {}

    def normalize(self, observations: list[dict[str, Any]]) -> dict[str, list[LabValue]]:
        labs: dict[str, list[LabValue]] = defaultdict(list)
        seen: dict[tuple[str, datetime, float], str] = {}
        for resource in observations:
            for lab in self._one(resource):
                key = (lab.analyte, lab.time, lab.value)
                if key in seen:
                    self.issues.append(
                        DataIssue(
                            lab.resource_id,
                            f"duplicate of {seen[key]} (same analyte, time and value)",
                            severity="flagged",
                        )
                    )
                    continue
                seen[key] = lab.resource_id
                labs[lab.analyte].append(lab)
        for values in labs.values():
            values.sort(key=lambda lab: lab.time)
        return labs

    def _analyte(self, concept: Any) -> tuple[str, str, bool] | None:
        # Hot path (thousands of Observations per hook): a plain loop instead of the codings() generator.
        items = concept.get("coding") if isinstance(concept, dict) else None
        if isinstance(items, list):
            index = self.kb.loinc_index
            for coding in items:
                # A code without its system is ambiguous (the same string exists in SNOMED): not matched.
                if isinstance(coding, dict) and coding.get("system") == LOINC:
                    code = coding.get("code")
                    hit = index.get(code) if isinstance(code, str) else None
                    if hit is not None:
                        return hit.analyte, code, hit.fasting  # type: ignore[return-value]
        if self.kb.analyte_text:
            text = concept_text(concept)
            if text:
                for analyte, matcher in self.kb.analyte_text.items():
                    if matcher.matches(text):
                        return analyte, "(text)", False
        return None

    def _one(self, resource: dict[str, Any]) -> list[LabValue]:
        mapped = self._analyte(resource.get("code"))
        components = resource.get("component")
        mapped_components: list[tuple[int, dict[str, Any], tuple[str, str, bool]]] = []
        if isinstance(components, list):
            for index, component in enumerate(components):
                if isinstance(component, dict):
                    hit = self._analyte(component.get("code"))
                    if hit is not None:
                        mapped_components.append((index, component, hit))
        if mapped is None and not mapped_components:
            return []
        key = resource_key(resource)
        status = resource.get("status")
        if status in EXCLUDED_STATUSES:
            self.issues.append(DataIssue(key, f"status '{status}': excluded"))
            return []
        time = period_start(resource, "effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued")
        if time is None:
            self.issues.append(
                DataIssue(key, "no usable effective time or issued: excluded", path="effective[x]")
            )
            return []
        preliminary = status in FLAGGED_STATUSES
        if preliminary:
            self.issues.append(DataIssue(key, f"status '{status}': used but flagged", severity="flagged"))
        found: list[LabValue] = []
        if mapped is not None:
            lab = self._value(key, "", resource, resource, mapped, time, preliminary)
            if lab is not None:
                found.append(lab)
        for index, component, hit in mapped_components:
            lab = self._value(
                f"{key}#component[{index}]",
                f"component[{index}].",
                resource,
                component,
                hit,
                time,
                preliminary,
            )
            if lab is not None:
                found.append(lab)
        return found

    def _value(
        self,
        key: str,
        path: str,
        resource: dict[str, Any],
        holder: dict[str, Any],
        mapped: tuple[str, str, bool],
        time: datetime,
        preliminary: bool,
    ) -> LabValue | None:
        analyte, code, fasting = mapped
        quantity = holder.get("valueQuantity")
        if not isinstance(quantity, dict):
            if "dataAbsentReason" not in holder:
                self.issues.append(
                    DataIssue(key, "no numeric valueQuantity: excluded", path=f"{path}value[x]")
                )
            return None
        raw = number(quantity.get("value"))
        if raw is None:
            self.issues.append(
                DataIssue(
                    key,
                    "valueQuantity.value is not a finite number: excluded",
                    path=f"{path}valueQuantity.value",
                )
            )
            return None
        unit = _unit_of(quantity)
        if unit is None:
            unit = "" if self.kb.analytes[analyte].get("dimensionless") else None
        if unit is None:
            self.issues.append(
                DataIssue(key, "valueQuantity has no unit: excluded", path=f"{path}valueQuantity.code")
            )
            return None
        try:
            conversion = self.kb.units.conversion(analyte, unit)
        except UnitError as exc:
            self.issues.append(
                DataIssue(
                    key,
                    f"unit {exc} ({self.kb.display(analyte)}): excluded",
                    path=f"{path}valueQuantity.code",
                )
            )
            return None
        comparator = quantity.get("comparator")
        if comparator not in COMPARATORS:
            comparator = None
        low, high, range_source = self._range(analyte, holder, resource, unit)
        decimals = _decimals(raw)
        return LabValue(
            analyte=analyte,
            value=conversion.apply(raw),
            unit=self.kb.analytes[analyte]["canonical_unit"],
            time=time,
            resource_id=key,
            code=code,
            original_value=raw,
            original_unit=unit,
            comparator=comparator,
            low=low,
            high=high,
            range_source=range_source,
            preliminary=preliminary,
            fasting=fasting,
            increment=abs(conversion.scale) * 10.0 ** (-decimals),
        )

    def _range(
        self, analyte: str, holder: dict[str, Any], resource: dict[str, Any], unit: str
    ) -> tuple[float | None, float | None, Any]:
        ranges = holder.get("referenceRange", resource.get("referenceRange") if holder is resource else None)
        if isinstance(ranges, list):
            for entry in ranges:
                if not isinstance(entry, dict):
                    continue
                low = self._limit(analyte, entry.get("low"), unit)
                high = self._limit(analyte, entry.get("high"), unit)
                if low is not None or high is not None:
                    return low, high, "observation"
        fallback = self.kb.ranges.get(analyte)
        if fallback is not None:
            self.fallback_analytes.add(analyte)
            return fallback[0], fallback[1], "fallback"
        return None, None, "none"

    def _limit(self, analyte: str, quantity: Any, default_unit: str) -> float | None:
        if not isinstance(quantity, dict):
            return None
        raw = quantity.get("value")
        if type(raw) is float or type(raw) is int:
            # Reference ranges repeat across a patient's results: convert each distinct one once.
            key = (
                analyte,
                raw,
                quantity.get("code"),
                quantity.get("unit"),
                quantity.get("system"),
                default_unit,
            )
            if key not in self._limits:
                self._limits[key] = self._convert_limit(analyte, quantity, default_unit)
            return self._limits[key]
        return self._convert_limit(analyte, quantity, default_unit)

    def _convert_limit(self, analyte: str, quantity: dict[str, Any], default_unit: str) -> float | None:
        value = number(quantity.get("value"))
        if value is None:
            return None
        unit = _unit_of(quantity) or default_unit
        try:
            return self.kb.units.convert(analyte, value, unit)
        except UnitError:
            return None
