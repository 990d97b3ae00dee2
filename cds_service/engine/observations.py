"""Observation -> LabValue: LOINC code to analyte, UCUM unit to canonical unit, status, time, ranges.

Lenient on shape, strict on meaning: an unknown or incompatible unit, a missing time or a non-numeric value
excludes the value and records a DataIssue; nothing is guessed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter, eq
from typing import Any, NamedTuple

import msgspec
from msgspec import UNSET, Raw, UnsetType

from cds_service.engine.catalog import LOINC, UCUM
from cds_service.engine.fhirutil import concept_text, number, parse_datetime, period_start, resource_key
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import DataIssue, LabValue, RangeSource
from cds_service.engine.typed import (
    CONCEPT,
    RANGES,
    Quantity,
    TypedObservation,
    as_dict,
    as_json,
)
from cds_service.engine.units import Linear, UnitError

EXCLUDED_STATUSES = frozenset({"entered-in-error", "cancelled"})
FLAGGED_STATUSES = frozenset({"preliminary", "registered", "unknown"})
COMPARATORS = frozenset({"<", "<=", ">", ">="})
_TIME = attrgetter("time")
_SAME_VALUE = attrgetter("analyte", "time", "value")
_FROMISO = datetime.fromisoformat
_NO_QUANTITY: dict[str, Any] = {}
_UCUM_OR_UNSET = frozenset({UCUM, UNSET})
_NOT_PLAIN_STATUSES = EXCLUDED_STATUSES | FLAGGED_STATUSES


class _Recipe(NamedTuple):
    """Everything about a typed Observation that depends only on its LOINC code and unit."""

    analyte: str
    code: str
    unit: str
    canonical: str
    conversion: Linear
    identity: bool  # the unit is the canonical one: values pass through unchanged
    fasting: bool
    without_range: tuple[float | None, float | None, RangeSource]  # when the Observation has none
    # This pair's referenceRange arrays by their JSON bytes: (low, high, source) as used, or None when the
    # array is not the plain shape (one range of typed quantities, or none) and the general path decides.
    ranges: dict[bytes, RangeResult | None]


class _Concept(NamedTuple):
    """What a code (CodeableConcept) means, by its JSON bytes: looked up once per distinct concept."""

    plain: bool  # decodes as a typed CodeableConcept; otherwise the general path decides
    first_loinc: str | None  # the first coding's code, if that coding is LOINC (the plain single value)
    mapped: tuple[str, str, bool] | None  # (analyte, LOINC code, fasting) by the general rule (_analyte)


_NOT_PLAIN = _Concept(False, None, None)
_UNSEEN: Any = object()  # a cache miss, where None is a cached answer


def _unit_of(quantity: dict[str, Any]) -> str | None:
    code = quantity.get("code")
    system = quantity.get("system")
    if isinstance(code, str) and (system is None or system == UCUM):
        return code
    unit = quantity.get("unit")
    if isinstance(unit, str):
        return unit
    return code if isinstance(code, str) else None


def _may_repeat(series: list[LabValue]) -> bool:
    """Whether a time-sorted series holds the same value twice at one time. Checked in C: adjacent times
    first (equal times are rare within one analyte), the full (analyte, time, value) set only then."""
    if len(series) < 2:
        return False
    times = list(map(_TIME, series))
    if not any(map(eq, times, times[1:])):
        return False
    return len(set(map(_SAME_VALUE, series))) != len(series)


RangeResult = tuple[float | None, float | None, Any]
CACHE_LIMIT = 20_000  # entries per lookup cache; keys come from request data, so the caches are bounded


@dataclass(slots=True)
class _Lookups:
    """What depends only on the knowledge base and the key looked up (unit conversions, converted reference
    ranges, text matches, recipes): shared by every evaluation with the same knowledge base, so a hook
    does not recompute what the previous hook already found."""

    kb: Knowledge
    canonical: dict[str, str]
    ranges: dict[tuple[Any, ...], RangeResult] = field(default_factory=dict)
    conversions: dict[tuple[str, str], Linear] = field(default_factory=dict)
    text_hits: dict[tuple[Any, ...], tuple[str, str, bool] | None] = field(default_factory=dict)
    recipes: dict[tuple[Any, Any], _Recipe] = field(default_factory=dict)
    concepts: dict[bytes, _Concept] = field(default_factory=dict)

    def bounded(self) -> _Lookups:
        caches = (
            self.ranges,
            self.conversions,
            self.text_hits,
            self.recipes,
            self.concepts,
        )
        for cache in caches:
            if len(cache) > CACHE_LIMIT:
                cache.clear()
        return self


_LOOKUPS: dict[int, _Lookups] = {}


def _lookups(kb: Knowledge) -> _Lookups:
    found = _LOOKUPS.get(id(kb))
    if found is None or found.kb is not kb:  # (an id can be reused once a knowledge base is gone)
        if len(_LOOKUPS) > 8:
            _LOOKUPS.clear()
        canonical = {name: str(spec["canonical_unit"]) for name, spec in kb.analytes.items()}
        found = _LOOKUPS[id(kb)] = _Lookups(kb, canonical)
    return found.bounded()


class ObservationNormalizer:
    """Normalizes Observations for one evaluation; collects issues and the fallback-range analytes."""

    def __init__(self, kb: Knowledge) -> None:
        self.kb = kb
        self.issues: list[DataIssue] = []
        self.fallback_analytes: set[str] = set()
        lookups = _lookups(kb)
        self._ranges = lookups.ranges
        self._conversions = lookups.conversions
        self._text_hits = lookups.text_hits
        self._canonical = lookups.canonical
        self._loinc = kb.loinc_index
        self._recipes = lookups.recipes
        self._concepts = lookups.concepts

    def normalize(self, observations: list[Any]) -> dict[str, list[LabValue]]:
        issues_before = len(self.issues)
        found: list[LabValue] = []
        self._normalize_each(observations, found)
        labs: dict[str, list[LabValue]] = defaultdict(list)
        for lab in found:
            labs[lab.analyte].append(lab)
        for values in labs.values():
            values.sort(key=_TIME)  # stable: equal times keep their input order
            if _may_repeat(values):
                # Duplicates are rare: normalize again, reporting each where it occurs among the other issues.
                del self.issues[issues_before:]
                return self._normalize_reporting_duplicates(observations)
        return labs

    def _normalize_reporting_duplicates(self, observations: list[Any]) -> dict[str, list[LabValue]]:
        labs: dict[str, list[LabValue]] = defaultdict(list)
        seen: dict[tuple[str, datetime, float], str] = {}
        found: list[LabValue] = []
        for resource in observations:
            self._normalize_each((resource,), found)
            for lab in found:  # usually one value
                key = (lab.analyte, lab.time, lab.value)
                size = len(seen)
                first = seen.setdefault(key, lab.resource_id)
                if len(seen) == size:
                    self.issues.append(
                        DataIssue(
                            lab.resource_id,
                            f"duplicate of {first} (same analyte, time and value)",
                            severity="flagged",
                        )
                    )
                    continue
                labs[lab.analyte].append(lab)
            found.clear()
        for values in labs.values():
            values.sort(key=_TIME)
        return labs

    def _normalize_each(self, observations: Iterable[Any], found: list[LabValue]) -> None:
        """Append the values of each Observation to `found`, in input order.

        The plain shapes, type-checked by the decoder (codes and ranges once per distinct value), are read
        inline (the hot path: thousands per hook): a LOINC-coded numeric value, or a panel of LOINC-coded
        numeric components, with an effectiveDateTime, UCUM units and a status that is neither excluded
        nor flagged. Anything else, and anything not decoded (JSON), takes the general path (`_one`),
        which decides and reports.
        """
        one, panel, value_of = self._one, self._typed_panel, self._typed_value
        concepts, concept_of = self._concepts, self._concept
        append = found.append
        times: dict[str, datetime] = {}  # a panel's results share their time: parse it once
        for observation in observations:
            if type(observation) is not TypedObservation:
                one(observation, found)
                continue
            # `x is UNSET` rather than isinstance (the hot path); UNSET is also falsy.
            code, rid, effective = observation.code, observation.id, observation.effectiveDateTime
            plain = observation.status not in _NOT_PLAIN_STATUSES
            if code is UNSET or rid is UNSET or effective is UNSET or not plain:
                one(observation, found)
                continue
            time = times.get(effective)
            if time is None:
                try:
                    time = _FROMISO(effective)
                except ValueError:
                    one(observation, found)
                    continue
                if time.tzinfo is None:
                    time = time.replace(tzinfo=UTC)
                times[effective] = time
            key = f"Observation/{rid}"
            if observation.component:
                if not panel(observation, code, key, time, found):
                    one(observation, found)
                continue
            # _concept, with its cache lookup inline (the hot path)
            loinc = (concepts.get(bytes(code)) or concept_of(code)).first_loinc
            lab = (
                None
                if loinc is None
                else value_of(key, loinc, observation.valueQuantity, observation.referenceRange, time)
            )
            if lab is None:
                one(observation, found)
            else:
                append(lab)

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
        if self.kb.analyte_text and isinstance(concept, dict):
            # The same unmapped code (e.g. a blood-pressure panel) repeats: match its text once.
            key = _concept_key(concept, items)
            if key is None:
                return self._match_text(concept)
            if key not in self._text_hits:
                self._text_hits[key] = self._match_text(concept)
            return self._text_hits[key]
        return None

    def _match_text(self, concept: Any) -> tuple[str, str, bool] | None:
        text = concept_text(concept)
        if text:
            for analyte, matcher in self.kb.analyte_text.items():
                if matcher.matches(text):
                    return analyte, "(text)", False
        return None

    def _one(self, resource: Any, found: list[LabValue]) -> None:
        """The general (lenient) path: any JSON Observation, or a typed one that is not the plain shape."""
        if type(resource) is TypedObservation:
            resource = as_dict(resource)
        mapped = self._analyte(resource.get("code"))
        components = resource.get("component")
        mapped_components: list[tuple[int, dict[str, Any], tuple[str, str, bool]]] = []
        if type(components) is list:
            for index, component in enumerate(components):
                if isinstance(component, dict):
                    hit = self._analyte(component.get("code"))
                    if hit is not None:
                        mapped_components.append((index, component, hit))
        if mapped is None and not mapped_components:
            return
        rid = resource.get("id")
        key = f"Observation/{rid}" if type(rid) is str else resource_key(resource)
        status = resource.get("status")
        if status is not None and type(status) is not str:  # a list or object is not a code (unhashable)
            self.issues.append(DataIssue(key, "status is not a code: excluded", path="status"))
            return
        if status in EXCLUDED_STATUSES:
            self.issues.append(DataIssue(key, f"status '{status}': excluded"))
            return
        effective = resource.get("effectiveDateTime")
        time = parse_datetime(effective) if type(effective) is str else None
        if time is None:
            time = period_start(
                resource, "effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued"
            )
        if time is None:
            self.issues.append(
                DataIssue(key, "no usable effective time or issued: excluded", path="effective[x]")
            )
            return
        preliminary = status in FLAGGED_STATUSES
        if preliminary:
            self.issues.append(DataIssue(key, f"status '{status}': used but flagged", severity="flagged"))
        if mapped is not None:
            lab = self._value(key, "", resource, resource, mapped, time, preliminary)
            if lab is not None:
                found.append(lab)
        for index, component, hit in mapped_components:
            path = f"component[{index}]."
            lab = self._value(f"{key}#{path[:-1]}", path, resource, component, hit, time, preliminary)
            if lab is not None:
                found.append(lab)

    def _typed_panel(
        self,
        observation: TypedObservation,
        code: Raw,
        key: str,
        time: datetime,
        found: list[LabValue],
    ) -> bool:
        """A panel (e.g. blood pressure): its own code unmapped, each mapped component one value."""
        own = self._concept(code)
        if observation.valueQuantity is not UNSET or not own.plain or own.mapped is not None:
            return False
        labs: list[LabValue] = []
        for index, component in enumerate(observation.component or ()):
            concept = component.code
            if isinstance(concept, UnsetType):
                continue
            meaning = self._concept(concept)
            if not meaning.plain:
                return False
            mapped = meaning.mapped
            if mapped is None:
                continue  # as on the general path: components of other analytes are not read
            lab = self._typed_value(
                f"{key}#component[{index}]",
                mapped[1],
                component.valueQuantity,
                component.referenceRange,
                time,
            )
            if lab is None or lab.analyte != mapped[0]:
                return False
            labs.append(lab)
        found.extend(labs)
        return True

    def _typed_value(
        self,
        key: str,
        code: str | UnsetType,
        quantity: Quantity | UnsetType,
        ranges: Raw | UnsetType,
        time: datetime,
    ) -> LabValue | None:
        if quantity is UNSET:
            return None
        unit, raw = quantity.code, quantity.value
        recipe = self._recipes.get((code, unit)) or self._recipe(code, unit)
        if recipe is None or raw is UNSET or not -1e15 < raw < 1e15 or quantity.system not in _UCUM_OR_UNSET:
            return None
        if ranges is UNSET:
            low, high, range_source = recipe.without_range
        else:
            text = bytes(ranges)
            found = recipe.ranges.get(text, _UNSEEN)
            if found is _UNSEEN:
                found = self._typed_ranges(recipe, text)
            if found is None:
                return None
            low, high, range_source = found
        if range_source == "fallback":
            self.fallback_analytes.add(recipe.analyte)
        comparator = quantity.comparator
        return LabValue(
            analyte=recipe.analyte,
            value=raw if recipe.identity else recipe.conversion.apply(raw),
            unit=recipe.canonical,
            time=time,
            resource_id=key,
            code=recipe.code,
            original_value=raw,
            original_unit=recipe.unit,
            comparator=comparator if comparator in COMPARATORS else None,
            low=low,
            high=high,
            range_source=range_source,
            preliminary=False,
            fasting=recipe.fasting,
            scale=recipe.conversion.scale,
        )

    def _concept(self, raw: Raw) -> _Concept:
        """What a code means, decoded and type-checked once per distinct concept (by its JSON bytes)."""
        text = bytes(raw)
        found = self._concepts.get(text)
        if found is None:
            try:
                concept = CONCEPT.decode(text)
            except msgspec.ValidationError:
                found = _NOT_PLAIN
            else:
                first = concept.coding[0] if concept.coding else None
                loinc = first.code if first is not None and first.system == LOINC else None
                mapped = self._analyte(as_json(concept))
                found = _Concept(True, loinc if isinstance(loinc, str) else None, mapped)
            self._concepts[text] = found
        return found

    def _recipe(self, code: str | UnsetType, unit: str | UnsetType) -> _Recipe | None:
        """What a (LOINC code, unit) pair maps to, or None if the general path must decide."""
        if isinstance(code, UnsetType) or isinstance(unit, UnsetType):
            return None
        hit = self._loinc.get(code)
        if hit is None:
            return None
        analyte = hit.analyte
        conversion = self._conversions.get((analyte, unit))
        if conversion is None:
            try:
                conversion = self._conversions[(analyte, unit)] = self.kb.units.conversion(analyte, unit)
            except UnitError:
                return None  # the general path reports it
        fallback = self.kb.ranges.get(analyte)
        recipe = _Recipe(
            analyte, code, unit, self._canonical[analyte], conversion,
            conversion.scale == 1.0 and conversion.offset == 0.0, hit.fasting,
            (None, None, "none") if fallback is None else (fallback[0], fallback[1], "fallback"), {},
        )  # fmt: skip
        self._recipes[(code, unit)] = recipe
        return recipe

    def _typed_ranges(self, recipe: _Recipe, text: bytes) -> RangeResult | None:
        """A referenceRange array as used with this recipe, decoded and converted once per distinct array:
        none -> the recipe's fallback, one typed range -> converted (if it gives a bound), anything else
        (several ranges, another shape) -> None, and the general path decides."""
        try:
            entries = RANGES.decode(text)
        except msgspec.ValidationError:
            found: RangeResult | None = None
        else:
            if not entries:
                found = recipe.without_range
            elif len(entries) == 1:
                converted = self._convert_range(recipe.analyte, [as_json(entries[0])], recipe.unit)
                found = converted if converted[2] == "observation" else recipe.without_range
            else:
                found = None
        if len(recipe.ranges) > CACHE_LIMIT:  # keys come from request data
            recipe.ranges.clear()
        recipe.ranges[text] = found
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
        if type(quantity) is not dict:
            if "dataAbsentReason" not in holder:
                self._issue(key, "no numeric valueQuantity: excluded", f"{path}value[x]")
            return None
        raw = quantity.get("value")
        if type(raw) is not float and type(raw) is not int or not -1e15 < raw < 1e15:
            raw = number(raw)
            if raw is None:
                self._issue(
                    key, "valueQuantity.value is not a finite number: excluded", f"{path}valueQuantity.value"
                )
                return None
        unit = quantity.get("code")
        if type(unit) is not str or quantity.get("system", UCUM) != UCUM:
            unit = _unit_of(quantity)
            if unit is None and self.kb.analytes[analyte].get("dimensionless"):
                unit = ""
            if unit is None:
                self._issue(key, "valueQuantity has no unit: excluded", f"{path}valueQuantity.code")
                return None
        conversion = self._conversions.get((analyte, unit))
        if conversion is None:
            try:
                conversion = self._conversions[(analyte, unit)] = self.kb.units.conversion(analyte, unit)
            except UnitError as exc:
                problem = f"unit {exc} ({self.kb.display(analyte)}): excluded"
                self._issue(key, problem, f"{path}valueQuantity.code")
                return None
        comparator = quantity.get("comparator")
        low, high, range_source = self._range(analyte, holder, resource, unit)
        value = raw if conversion.scale == 1.0 and conversion.offset == 0.0 else conversion.apply(raw)
        return LabValue(
            analyte=analyte,
            value=value,
            unit=self._canonical[analyte],
            time=time,
            resource_id=key,
            code=code,
            original_value=raw,
            original_unit=unit,
            comparator=comparator if comparator in COMPARATORS else None,
            low=low,
            high=high,
            range_source=range_source,
            preliminary=preliminary,
            fasting=fasting,
            scale=conversion.scale,
        )

    def _issue(self, key: str, problem: str, path: str) -> None:
        self.issues.append(DataIssue(key, problem, path=path))

    def _range(
        self, analyte: str, holder: dict[str, Any], resource: dict[str, Any], unit: str
    ) -> tuple[float | None, float | None, Any]:
        ranges = holder.get("referenceRange")
        if type(ranges) is list and ranges:
            key = _range_key(analyte, unit, ranges)
            found = None
            if key is not None:
                # Reference ranges repeat across a patient's results: convert each distinct one once.
                try:
                    found = self._ranges.get(key)
                except TypeError:  # a value that is not a JSON scalar (unhashable): no caching
                    key = None
                if found is None:
                    found = self._convert_range(analyte, ranges, unit)
                    if key is not None:
                        self._ranges[key] = found
            else:
                found = self._convert_range(analyte, ranges, unit)
            if found[2] == "observation":
                return found
        fallback = self.kb.ranges.get(analyte)
        if fallback is not None:
            self.fallback_analytes.add(analyte)
            return fallback[0], fallback[1], "fallback"
        return None, None, "none"

    def _convert_range(
        self, analyte: str, ranges: list[Any], unit: str
    ) -> tuple[float | None, float | None, Any]:
        for entry in ranges:
            if not isinstance(entry, dict):
                continue
            low = self._limit(analyte, entry.get("low"), unit)
            high = self._limit(analyte, entry.get("high"), unit)
            if low is not None or high is not None:
                return low, high, "observation"
        return None, None, "none"

    def _limit(self, analyte: str, quantity: Any, default_unit: str) -> float | None:
        if not isinstance(quantity, dict):
            return None
        value = number(quantity.get("value"))
        if value is None:
            return None
        unit = _unit_of(quantity) or default_unit
        try:
            return self.kb.units.convert(analyte, value, unit)
        except UnitError:
            return None


def _concept_key(concept: dict[str, Any], items: Any) -> tuple[Any, ...] | None:
    """What text matching depends on (code.text and each coding's code and display), when hashable."""
    codings = (
        tuple((c.get("code"), c.get("display")) for c in items if type(c) is dict)
        if type(items) is list
        else ()
    )
    key = (concept.get("text"), codings)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _range_key(analyte: str, unit: str, ranges: list[Any]) -> tuple[Any, ...] | None:
    """A key for a single reference range of plain quantities (None when unusual; may be unhashable)."""
    if len(ranges) != 1:
        return None
    entry = ranges[0]
    if type(entry) is not dict:
        return None
    low = entry.get("low")
    high = entry.get("high")
    if low is None:
        low = _NO_QUANTITY
    elif type(low) is not dict:
        return None
    if high is None:
        high = _NO_QUANTITY
    elif type(high) is not dict:
        return None
    return (
        analyte, unit,
        low.get("value"), low.get("code"), low.get("unit"), low.get("system"),
        high.get("value"), high.get("code"), high.get("unit"), high.get("system"),
    )  # fmt: skip
