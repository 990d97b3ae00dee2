"""Physiologically plausible values [D]: a value no patient can have is a data error, not a finding.

Each analyte's bounds are `plausible` in mappings/analytes.yaml, in its canonical unit. A value outside them
is excluded and reported; it is never read as normal or abnormal by any criterion. A censored result stands
for the true values its comparator allows (`<0.5`: anything below 0.5), and is plausible when some of those
are: `<0.5` ferritin is, `<0` is not, and `>50` degrees C is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cds_service.engine.units import Linear

FINITE = 1e15  # a larger magnitude is not read as a number (fhirutil.number)
_MARGIN = 1e-6  # relative: well beyond the conversion's rounding (12 significant digits)


@dataclass(frozen=True, slots=True)
class Plausible:
    """low..high in the canonical unit; a bound is inclusive unless marked exclusive."""

    low: float = -math.inf
    high: float = math.inf
    low_exclusive: bool = False
    high_exclusive: bool = False

    @classmethod
    def of(cls, spec: dict[str, Any] | None) -> Plausible:
        """From an analyte's `plausible` entry (none: every finite value is plausible)."""
        if not spec:
            return cls()
        return cls(
            low=float(spec.get("min", -math.inf)),
            high=float(spec.get("max", math.inf)),
            low_exclusive=bool(spec.get("min_exclusive", False)),
            high_exclusive=bool(spec.get("max_exclusive", False)),
        )

    def allows(self, value: float, comparator: str | None) -> bool:
        """Whether a true value the result stands for can lie within the bounds."""
        if comparator == "<":
            return value > self.low
        if comparator == "<=":
            return self._above_low(value)
        if comparator == ">":
            return value < self.high
        if comparator == ">=":
            return self._below_high(value)
        return self._above_low(value) and self._below_high(value)

    def sure_range(self, conversion: Linear) -> tuple[float, float]:
        """Reported values (before `conversion`) strictly between these are finite and strictly inside the
        bounds once converted, so plausible whatever their comparator: the fast path's single check. Exact
        in the canonical unit; narrowed by a margin through a conversion (values within it are judged
        exactly)."""
        if conversion.scale == 1.0 and conversion.offset == 0.0:
            return max(self.low, -FINITE), min(self.high, FINITE)
        low = self._reported(self.low, conversion, 1.0)
        high = self._reported(self.high, conversion, -1.0)
        return max(low, -FINITE), min(high, FINITE)

    def _reported(self, bound: float, conversion: Linear, inward: float) -> float:
        """`bound` in the reported unit, moved inward by the margin; the far side when unsure."""
        if math.isinf(bound):
            return bound
        if conversion.scale <= 0:  # (units scale positively; a conversion that does not is judged exactly)
            return inward * FINITE
        reported = (bound - conversion.offset) / conversion.scale
        reported += inward * (abs(reported) + 1.0) * _MARGIN
        converted = conversion.apply(reported)
        if converted > bound if inward > 0 else converted < bound:
            return reported
        return inward * FINITE  # every reported value is judged exactly

    def describe(self, unit: str) -> str:
        """The bounds as text, e.g. '> 0 ng/mL' or '>= 25 and <= 46 Cel'."""
        if math.isinf(self.low) and math.isinf(self.high):
            return "any value"
        if math.isinf(self.high):
            return f"{'>' if self.low_exclusive else '>='} {self.low:g} {unit}"
        if math.isinf(self.low):
            return f"{'<' if self.high_exclusive else '<='} {self.high:g} {unit}"
        low = f"{'>' if self.low_exclusive else '>='} {self.low:g}"
        high = f"{'<' if self.high_exclusive else '<='} {self.high:g}"
        return f"{low} and {high} {unit}"

    def _above_low(self, value: float) -> bool:
        return value > self.low if self.low_exclusive else value >= self.low

    def _below_high(self, value: float) -> bool:
        return value < self.high if self.high_exclusive else value <= self.high
