"""UCUM unit conversion to each analyte's canonical unit.

Units are parsed with ucumvert (a UCUM grammar) and converted with pint. A conversion is a linear map
`canonical = scale * value + offset` (offset only for temperatures), computed once per (analyte, unit)
and cached, so the hot path is a dict lookup. An unknown, unparseable or dimensionally incompatible unit
raises UnitError: the value is excluded and reported, never guessed.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SIGNIFICANT_DIGITS = 12  # numerical hygiene only: removes float noise such as 250.00000000000003


class UnitError(ValueError):
    """The unit cannot be converted to the analyte's canonical unit."""


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What an analyte accepts: canonical unit, molar mass, aliases, explicitly rejected units."""

    canonical: str
    molar_mass_g_per_mol: float | None = None
    dimensionless: bool = False
    aliases: tuple[tuple[str, str], ...] = ()
    rejected: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Linear:
    """canonical = scale * value + offset."""

    scale: float
    offset: float = 0.0

    def apply(self, value: float) -> float:
        if self.scale == 1.0 and self.offset == 0.0:
            return value  # most results arrive in the canonical unit
        return round_sig(self.scale * value + self.offset)


def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Round to `digits` significant digits (not a clinical rounding: removes binary noise)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def scaled(factor: float, value: float) -> float:
    """factor x value without binary noise (3 x 1.2 must equal 3.6 at a cut-off)."""
    return round_sig(factor * value)


_DIMENSIONLESS_SPELLINGS = {"", "1", "{ratio}", "{INR}", "INR", "{index}", "ratio"}
_lock = threading.Lock()


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry

    folder = _private_cache_folder()
    if folder is not None:
        try:
            # pint keeps the parsed unit definitions there: start-up 0.6 s -> 0.3 s from the second start
            return PintUcumRegistry(cache_folder=folder)
        except Exception:  # a damaged cache must never stop unit conversion: build without it
            pass
    return PintUcumRegistry()


def _private_cache_folder() -> Path | None:
    """$XDG_CACHE_HOME (or ~/.cache)/cds-service/units, if it is ours and only ours (pint stores pickles
    there, which must not be writable by anyone else); None if it cannot be."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cds-service" / "units"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = base.stat()
    except (OSError, RuntimeError):  # read-only home, no home directory
        return None
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        return None
    return base


def _quantity(registry: Any, ucum: str) -> Any:
    try:
        parsed = registry.from_ucum(ucum)
    except Exception as exc:  # ucumvert raises several parser exception types
        raise UnitError(f"'{ucum}' is not a valid UCUM unit") from exc
    if not hasattr(parsed, "dimensionality"):
        raise UnitError(f"'{ucum}' has no dimension (annotation only)")
    return parsed


def _molar_bridge(quantity: Any, target: Any, molar_mass: float | None) -> Any:
    """Convert substance concentration to mass concentration (or back) with the molar mass."""
    if molar_mass is None:
        return None
    grams_per_mole = quantity._REGISTRY.Quantity(molar_mass, "g/mol")
    try:
        candidates = (quantity * grams_per_mole, quantity / grams_per_mole)
    except Exception:  # pint refuses arithmetic on offset units (Cel, [degF]): not a concentration anyway
        return None
    for candidate in candidates:
        if candidate.dimensionality == target.dimensionality:
            return candidate
    return None


def _compute(spec: UnitSpec, unit: str) -> Linear:
    unit = dict(spec.aliases).get(unit, unit)
    if unit in spec.rejected:
        raise UnitError(f"'{unit}' needs a conversion factor that is not verified for this analyte")
    if spec.dimensionless:
        if unit in _DIMENSIONLESS_SPELLINGS:
            return Linear(1.0)
        raise UnitError(f"'{unit}' is not a dimensionless unit")
    registry = _registry()
    source = _quantity(registry, unit)
    target = _quantity(registry, spec.canonical)
    if source.dimensionality != target.dimensionality:
        bridged = _molar_bridge(source, target, spec.molar_mass_g_per_mol)
        if bridged is None:
            raise UnitError(f"'{unit}' is not compatible with {spec.canonical}")
        source = bridged
    quantity_type = source._REGISTRY.Quantity
    try:
        zero = quantity_type(0.0, source.units).to(target.units).magnitude / target.magnitude
        one = quantity_type(1.0, source.units).to(target.units).magnitude / target.magnitude
    except Exception as exc:
        raise UnitError(f"'{unit}' cannot be converted to {spec.canonical}") from exc
    scale = float(one - zero) * float(source.magnitude)
    return Linear(round_sig(scale), round_sig(float(zero)))


class UnitConverter:
    """Caches (analyte, unit) -> Linear conversions; thread-safe for use under gunicorn threads."""

    def __init__(self, specs: dict[str, UnitSpec]) -> None:
        self._specs = specs
        self._cache: dict[tuple[str, str], Linear | str] = {}

    def conversion(self, analyte: str, unit: str) -> Linear:
        """Return the conversion of `unit` for `analyte`, or raise UnitError."""
        key = (analyte, unit)
        found = self._cache.get(key)
        if found is None:
            with _lock:
                try:
                    found = _compute(self._specs[analyte], unit)
                except UnitError as exc:
                    found = str(exc)
                self._cache[key] = found
        if isinstance(found, str):
            raise UnitError(found)
        return found

    def convert(self, analyte: str, value: float, unit: str) -> float:
        return self.conversion(analyte, unit).apply(value)

    def threshold_to_canonical(self, analyte: str, value: float, unit: str | None) -> float:
        """Express a published threshold (in its original unit) in the analyte's canonical unit."""
        if unit is None or unit == self._specs[analyte].canonical:
            return float(value)
        return self.convert(analyte, float(value), unit)
