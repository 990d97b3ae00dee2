"""What the normalizer looks up rather than computes: shared by every evaluation with one knowledge base.

Unit conversions, converted reference ranges, what a code means and what a (code, unit) pair maps to depend
only on the knowledge base and the key, and the same few keys come back on every hook. Keys come from
request data, so every cache is bounded (CACHE_LIMIT entries, then cleared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from msgspec import Raw, UnsetType

from cds_service.engine.catalog import LOINC
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.observations.concepts import (
    TEXT_CODE,
    Concept,
    Mapped,
    concept_key,
    decode_concept,
    text_analyte,
)
from cds_service.engine.observations.plausibility import Plausible
from cds_service.engine.observations.ranges import (
    RangeResult,
    fallback_range,
    range_key,
    range_or,
    typed_entries,
)
from cds_service.engine.units import Linear, UnitError

CACHE_LIMIT = 20_000  # entries per lookup cache


class Recipe(NamedTuple):
    """Everything about a value that depends only on its analyte, code and unit."""

    analyte: str
    code: str
    unit: str
    canonical: str
    conversion: Linear
    identity: bool  # the unit is the canonical one: values pass through unchanged
    fasting: bool
    without_range: RangeResult  # when the Observation has no usable referenceRange
    plausible: Plausible  # a value outside is a data error (excluded and reported)
    # Reported values strictly between these are finite and plausible (Plausible.sure_range): the fast
    # path's one range check; values outside it are judged exactly.
    sure_low: float
    sure_high: float
    # Typed referenceRange arrays by their JSON bytes: the range as used, or None when the array is not the
    # plain shape and the general path decides.
    ranges: dict[bytes, RangeResult | None]


@dataclass(slots=True)
class Lookups:
    """The bounded caches of one knowledge base."""

    kb: Knowledge
    canonical: dict[str, str]
    ranges: dict[tuple[Any, ...], RangeResult] = field(default_factory=dict)
    text_hits: dict[tuple[Any, ...], Mapped | None] = field(default_factory=dict)
    recipes: dict[tuple[Any, ...], Recipe] = field(default_factory=dict)  # typed keys may hold UNSET
    concepts: dict[bytes, Concept] = field(default_factory=dict)

    def bounded(self) -> Lookups:
        for cache in (self.ranges, self.text_hits, self.recipes, self.concepts):
            if len(cache) > CACHE_LIMIT:
                cache.clear()
        return self

    def recipe(self, analyte: str, code: str, fasting: bool, unit: str) -> Recipe:
        """What a value of `analyte` (coded `code`) in `unit` maps to: the one place a unit conversion is
        looked up. Raises UnitError when the unit cannot be converted."""
        key = (code, unit) if code != TEXT_CODE else (code, unit, analyte)  # a LOINC code names its analyte
        found = self.recipes.get(key)
        if found is None:
            conversion = self.kb.units.conversion(analyte, unit)
            plausible = Plausible.of(self.kb.analytes[analyte].get("plausible"))
            sure_low, sure_high = plausible.sure_range(conversion)
            found = self.recipes[key] = Recipe(
                analyte=analyte,
                code=code,
                unit=unit,
                canonical=self.canonical[analyte],
                conversion=conversion,
                identity=conversion.scale == 1.0 and conversion.offset == 0.0,
                fasting=fasting,
                without_range=fallback_range(self.kb, analyte),
                plausible=plausible,
                sure_low=sure_low,
                sure_high=sure_high,
                ranges={},
            )
        return found

    def loinc_recipe(self, code: str | UnsetType, unit: str | UnsetType) -> Recipe | None:
        """The recipe of a typed value by its LOINC code, or None when the general path must decide."""
        if isinstance(code, UnsetType) or isinstance(unit, UnsetType):
            return None
        hit = self.kb.loinc_index.get(code)
        if hit is None:
            return None
        try:
            return self.recipe(hit.analyte, code, hit.fasting, unit)
        except UnitError:
            return None  # the general path reports it

    def concept(self, raw: Raw) -> Concept:
        """What a typed code means, decoded and type-checked once per distinct concept (by its bytes)."""
        text = bytes(raw)
        found = self.concepts.get(text)
        if found is None:
            found = self.concepts[text] = decode_concept(text, self.analyte)
        return found

    def analyte(self, concept: Any) -> Mapped | None:
        """(analyte, code, fasting) of a CodeableConcept: its first LOINC coding that names an analyte,
        else a reviewed text match (sCD25), made once per distinct unmapped code (panels repeat)."""
        # Once per JSON Observation and component: a plain loop rather than fhirutil.codings().
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
        if not self.kb.analyte_text or not isinstance(concept, dict):
            return None
        key = concept_key(concept)
        if key is None:
            return text_analyte(self.kb, concept)
        if key not in self.text_hits:
            self.text_hits[key] = text_analyte(self.kb, concept)
        return self.text_hits[key]

    def typed_range(self, recipe: Recipe, text: bytes) -> RangeResult | None:
        """A typed referenceRange array as used with `recipe`, converted once per distinct array."""
        entries = typed_entries(text)
        found = None if entries is None else self._range_or(recipe, entries)
        if len(recipe.ranges) > CACHE_LIMIT:
            recipe.ranges.clear()
        recipe.ranges[text] = found
        return found

    def general_range(self, recipe: Recipe, ranges: Any) -> RangeResult:
        """A JSON referenceRange as used with `recipe`; the usual single range converted once."""
        if type(ranges) is not list or not ranges:
            return recipe.without_range
        key = range_key(recipe.analyte, recipe.unit, ranges)
        try:
            found = None if key is None else self.ranges.get(key)
        except TypeError:  # a value that is not a JSON scalar (unhashable): not cached
            key = None
            found = None
        if found is None:
            found = self._range_or(recipe, ranges)
            if key is not None:
                self.ranges[key] = found
        return found

    def _range_or(self, recipe: Recipe, ranges: list[Any]) -> RangeResult:
        return range_or(recipe.without_range, self.kb.units, recipe.analyte, ranges, recipe.unit)


_LOOKUPS: dict[int, Lookups] = {}


def lookups_for(kb: Knowledge) -> Lookups:
    """The lookups of `kb`, made on first use."""
    found = _LOOKUPS.get(id(kb))
    if found is None or found.kb is not kb:  # (an id can be reused once a knowledge base is gone)
        if len(_LOOKUPS) > 8:
            _LOOKUPS.clear()
        canonical = {name: str(spec["canonical_unit"]) for name, spec in kb.analytes.items()}
        found = _LOOKUPS[id(kb)] = Lookups(kb, canonical)
    return found.bounded()
