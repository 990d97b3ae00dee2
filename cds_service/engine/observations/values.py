"""One measured value (an Observation's or a component's) -> LabValue, the same way on both paths.

The typed fast path reads a decoded Quantity of the plain shape; anything else is read by the general path,
which decides and says why a value is excluded. Both map the value through the same recipe (unit
conversion, fallback range, plausible bounds: lookups.Recipe), the same range conversion (ranges) and the
same builder (ValueReader.build), which also rejects implausible values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from msgspec import UNSET, Raw, UnsetType

from cds_service.engine.catalog import UCUM
from cds_service.engine.fhirutil import number
from cds_service.engine.model import DataIssue, LabValue
from cds_service.engine.observations.concepts import Mapped
from cds_service.engine.observations.lookups import Lookups, Recipe
from cds_service.engine.observations.quantity import UCUM_OR_UNSET, comparator_of, unit_of
from cds_service.engine.observations.ranges import RangeResult
from cds_service.engine.typed import Quantity
from cds_service.engine.units import UnitError


class Admitted(NamedTuple):
    """What the general path knows of an admitted Observation before reading its values."""

    time: datetime  # effective
    preliminary: bool
    issued: datetime | None  # released (Observation.issued), when known


TEXT_SHOWN = 24  # characters of a text value quoted in its data-quality issue
_UNSEEN: Any = object()  # a cache miss, where None is a cached answer


class ValueReader:
    """Reads the values of one evaluation, on either path. The issues and fallback-range analytes found are
    added to the collections it is given (the normalizer's)."""

    __slots__ = ("_fallbacks", "_issues", "_lookups", "_recipes")

    def __init__(self, lookups: Lookups, issues: list[DataIssue], fallbacks: set[str]) -> None:
        self._lookups = lookups
        self._recipes = lookups.recipes  # read once per typed value
        self._issues = issues
        self._fallbacks = fallbacks

    def build(
        self,
        recipe: Recipe,
        raw: float,
        comparator: str | None,
        key: str,
        time: datetime,
        bounds: RangeResult,
        preliminary: bool,
        issued: datetime | None,
    ) -> LabValue:
        """The one place a LabValue is made, from a finite, plausible value (an analyte whose limits came
        from the fallback table is recorded: the result lists them)."""
        low, high, range_source = bounds
        if range_source == "fallback":
            self._fallbacks.add(recipe.analyte)
        return LabValue(
            analyte=recipe.analyte,
            value=raw if recipe.identity else recipe.conversion.apply(raw),
            unit=recipe.canonical,
            time=time,
            resource_id=key,
            code=recipe.code,
            original_value=raw,
            original_unit=recipe.unit,
            comparator=comparator,
            low=low,
            high=high,
            range_source=range_source,
            preliminary=preliminary,
            fasting=recipe.fasting,
            scale=recipe.conversion.scale,
            issued=issued if issued is not None and issued > time else None,
        )

    def typed(
        self,
        key: str,
        code: str | UnsetType,
        quantity: Quantity | UnsetType,
        ranges: Raw | UnsetType,
        time: datetime,
        issued: datetime | None,
    ) -> LabValue | None:
        """The fast path (thousands per hook): a finite, plausible UCUM value of a known LOINC code in a
        convertible unit, with no range or one plain range. None hands the Observation to the general
        path, which decides and reports."""
        if quantity is UNSET:
            return None
        unit, raw = quantity.code, quantity.value
        recipe = self._recipes.get((code, unit)) or self._lookups.loinc_recipe(code, unit)
        if recipe is None or raw is UNSET or quantity.system not in UCUM_OR_UNSET:
            return None
        comparator = comparator_of(quantity.comparator)
        # One comparison decides nearly every value (finite, plausible); one outside the sure range is
        # judged exactly.
        if not recipe.sure_low < raw < recipe.sure_high:
            if not -1e15 < raw < 1e15 or not plausible(recipe, raw, comparator):
                return None  # the general path decides and reports
        bounds: RangeResult | None
        if ranges is UNSET:
            bounds = recipe.without_range
        else:
            text = bytes(ranges)
            bounds = recipe.ranges.get(text, _UNSEEN)
            if bounds is _UNSEEN:
                bounds = self._lookups.typed_range(recipe, text)
            if bounds is None:
                return None
        return self.build(recipe, raw, comparator, key, time, bounds, False, issued)

    def general(
        self,
        key: str,
        path: str,
        holder: dict[str, Any],
        mapped: Mapped,
        admitted: Admitted,
    ) -> LabValue | None:
        """The general path: the value of `holder` (an Observation or a component, at `path`), or None with
        the reason reported (none when the value is absent with a dataAbsentReason)."""
        analyte, code, fasting = mapped

        def issue(problem: str, where: str) -> None:
            self._issues.append(
                DataIssue(
                    key, problem, path=where, analyte=analyte, time=admitted.time, released=admitted.issued
                )
            )

        quantity = holder.get("valueQuantity")
        if type(quantity) is not dict:
            text = holder.get("valueString")
            if type(text) is str and text.strip():
                # Results beyond an assay's range often arrive as text (">100000"): say what it was.
                shown = text.strip()[:TEXT_SHOWN] + ("..." if len(text.strip()) > TEXT_SHOWN else "")
                issue(f"reported as text '{shown}', not as a number: excluded", f"{path}valueString")
            elif "dataAbsentReason" not in holder:
                issue("no numeric valueQuantity: excluded", f"{path}value[x]")
            return None
        raw = quantity.get("value")
        if type(raw) is not float and type(raw) is not int or not -1e15 < raw < 1e15:
            raw = number(raw)
            if raw is None:
                problem = "valueQuantity.value is not a finite number: excluded"
                issue(problem, f"{path}valueQuantity.value")
                return None
        unit = quantity.get("code")
        if type(unit) is not str or quantity.get("system", UCUM) != UCUM:
            unit = unit_of(quantity)
            if unit is None and self._lookups.kb.analytes[analyte].get("dimensionless"):
                unit = ""
            if unit is None:
                issue("valueQuantity has no unit: excluded", f"{path}valueQuantity.code")
                return None
        try:
            recipe = self._lookups.recipe(analyte, code, fasting, unit)
        except UnitError as exc:
            problem = f"unit {exc} ({self._lookups.kb.display(analyte)}): excluded"
            issue(problem, f"{path}valueQuantity.code")
            return None
        comparator = quantity.get("comparator")
        # Not one of FHIR's four (another code, a number, an array): a plain value, as on the typed path.
        comparator = comparator_of(comparator) if type(comparator) is str else None
        if not recipe.sure_low < raw < recipe.sure_high and not plausible(recipe, raw, comparator):
            issue(self._implausible(recipe, raw, comparator), f"{path}valueQuantity.value")
            return None
        bounds = self._lookups.general_range(recipe, holder.get("referenceRange"))
        time, preliminary, issued = admitted
        return self.build(recipe, raw, comparator, key, time, bounds, preliminary, issued)

    def _implausible(self, recipe: Recipe, raw: float, comparator: str | None) -> str:
        """Why a value was excluded as implausible, in the reported and (if another) the canonical unit."""
        shown = f"{comparator or ''}{raw:g} {recipe.unit}".rstrip()
        if recipe.unit != recipe.canonical:
            shown += f" = {recipe.conversion.apply(raw):g} {recipe.canonical}"
        display = self._lookups.kb.display(recipe.analyte)
        bounds = recipe.plausible.describe(recipe.canonical)
        return f"implausible value {shown} ({display}; plausible {bounds}): excluded"


def plausible(recipe: Recipe, raw: float, comparator: str | None) -> bool:
    """Whether a finite reported value can be true, judged in the canonical unit (plausibility)."""
    return recipe.plausible.allows(recipe.conversion.apply(raw), comparator)
