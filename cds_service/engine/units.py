"""UCUM unit conversion to each analyte's canonical unit.

Units are parsed with ucumvert (a UCUM grammar) and converted with pint. A conversion is a linear map
`canonical = scale * value + offset` (offset only for temperatures), computed once per (analyte, unit)
and cached, so the hot path is a dict lookup. An unknown, unparseable or dimensionally incompatible unit
raises UnitError: the value is excluded and reported, never guessed.

Unit strings come from request data, so they are bounded before any parsing or arithmetic
(cds_service.engine.unit_bounds: length, powers of ten, exponents, nesting); the cache of conversions is
an LRU of bounded size; parsing runs outside any lock, and the new strings one hook call may parse share a
time budget (:func:`parse_budget`): a string refused by a bound or by the budget is excluded and reported
like any other unusable unit.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from cds_service.engine.unit_bounds import UnitBoundError, check_bounds, quoted

SIGNIFICANT_DIGITS = 12  # numerical hygiene only: removes float noise such as 250.00000000000003
CACHE_SIZE = 4096  # (analyte, unit) conversions kept; far above the distinct units of real lab feeds
PARSE_BUDGET_S = 0.5  # parsing time for new unit strings within one hook call (a handful of ms each)


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
_registry_lock = threading.Lock()  # building the registry only, once per process (never held to parse)


class _Budget:
    """Parsing time left for new unit strings in one hook call (see parse_budget)."""

    __slots__ = ("left_s",)

    def __init__(self, seconds: float) -> None:
        self.left_s = seconds


_budget: ContextVar[_Budget | None] = ContextVar("unit_parse_budget", default=None)


@contextmanager
def parse_budget(seconds: float = PARSE_BUDGET_S) -> Iterator[None]:
    """Within this block (one hook call, in its thread), new unit strings may take `seconds` of parsing
    in all; once spent, further new strings are refused (UnitError, not cached) instead of parsed."""
    token = _budget.set(_Budget(seconds))
    try:
        yield
    finally:
        _budget.reset(token)


def _registry() -> Any:
    with _registry_lock:
        return _build_registry()


@cache
def _build_registry() -> Any:
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
        raise UnitError(f"{quoted(ucum)} is not a valid UCUM unit") from exc
    if not hasattr(parsed, "dimensionality"):
        raise UnitError(f"{quoted(ucum)} has no dimension (annotation only)")
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
        raise UnitError(f"{quoted(unit)} needs a conversion factor that is not verified for this analyte")
    if spec.dimensionless:
        if unit in _DIMENSIONLESS_SPELLINGS:
            return Linear(1.0)
        raise UnitError(f"{quoted(unit)} is not a dimensionless unit")
    try:
        check_bounds(unit)  # before the parser and pint's arithmetic ever see it
    except UnitBoundError as exc:
        raise UnitError(str(exc)) from None
    registry = _registry()
    source = _quantity(registry, unit)
    target = _quantity(registry, spec.canonical)
    if source.dimensionality != target.dimensionality:
        bridged = _molar_bridge(source, target, spec.molar_mass_g_per_mol)
        if bridged is None:
            raise UnitError(f"{quoted(unit)} is not compatible with {spec.canonical}")
        source = bridged
    quantity_type = source._REGISTRY.Quantity
    try:
        zero = quantity_type(0.0, source.units).to(target.units).magnitude / target.magnitude
        one = quantity_type(1.0, source.units).to(target.units).magnitude / target.magnitude
    except Exception as exc:
        raise UnitError(f"{quoted(unit)} cannot be converted to {spec.canonical}") from exc
    try:
        scale = float(one - zero) * float(source.magnitude)
        linear = Linear(round_sig(scale), round_sig(float(zero)))
    except (OverflowError, ValueError) as exc:
        raise UnitError(f"{quoted(unit)} cannot be converted to {spec.canonical}") from exc
    if not (math.isfinite(linear.scale) and math.isfinite(linear.offset)) or linear.scale == 0:
        raise UnitError(f"{quoted(unit)} cannot be converted to {spec.canonical}")
    return linear


class UnitConverter:
    """Caches (analyte, unit) -> Linear conversions (or the refusal) in a bounded LRU; thread-safe for
    gunicorn threads. The lock guards only the cache's bookkeeping: parsing runs outside it, so a slow
    string never holds up another thread (two threads parsing the same new string both get one answer)."""

    def __init__(self, specs: dict[str, UnitSpec], cache_size: int = CACHE_SIZE) -> None:
        self._specs = specs
        self._cache: LRUCache[tuple[str, str], Linear | str] = LRUCache(maxsize=cache_size)
        self._cache_lock = threading.Lock()

    def conversion(self, analyte: str, unit: str) -> Linear:
        """Return the conversion of `unit` for `analyte`, or raise UnitError."""
        key = (analyte, unit)
        with self._cache_lock:
            found = self._cache.get(key)
        if found is None:
            found = self._parse(analyte, unit)
            with self._cache_lock:
                self._cache[key] = found
        if isinstance(found, str):
            raise UnitError(found)
        return found

    def _parse(self, analyte: str, unit: str) -> Linear | str:
        """The conversion or the reason it is refused, within the caller's parse budget (a string the
        budget refuses raises at once and is not cached: a later call may parse it)."""
        budget = _budget.get()
        if budget is not None and budget.left_s <= 0:
            raise UnitError(f"{quoted(unit)} was not parsed: this request's time for new units is spent")
        # The registry is the process's one-time cost (about a second), not this request's data: built
        # before the clock starts, or a fresh worker's first call would refuse its own ferritin's unit.
        _registry()
        # CPU time of this thread, not wall time: the budget bounds the work a string costs, and a loaded
        # machine (other threads, other processes) must not make an ordinary unit look expensive.
        start = time.thread_time()
        try:
            return _compute(self._specs[analyte], unit)
        except UnitError as exc:
            return str(exc)
        finally:
            if budget is not None:
                budget.left_s -= time.thread_time() - start

    def prime(self) -> int:
        """Parse every analyte's canonical unit and reviewed aliases now (and so build the registry): the
        app does it before gunicorn forks. Returns how many conversions are cached."""
        for analyte, spec in self._specs.items():
            for unit in (spec.canonical, *(alias for alias, _ in spec.aliases)):
                try:
                    self.conversion(analyte, unit)
                except UnitError:
                    pass  # a refusal is cached like an answer
        return self.cached

    @property
    def cached(self) -> int:
        """Conversions currently cached (at most the cache size)."""
        return len(self._cache)

    def convert(self, analyte: str, value: float, unit: str) -> float:
        return self.conversion(analyte, unit).apply(value)

    def threshold_to_canonical(self, analyte: str, value: float, unit: str | None) -> float:
        """Express a published threshold (in its original unit) in the analyte's canonical unit."""
        if unit is None or unit == self._specs[analyte].canonical:
            return float(value)
        return self.convert(analyte, float(value), unit)
