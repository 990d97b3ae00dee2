"""Observation -> LabValue: LOINC code to analyte, UCUM unit to canonical unit, status, time, ranges.

Lenient on shape, strict on meaning: an unknown or incompatible unit, a missing time, a non-numeric or a
physiologically impossible value excludes the value and records a DataIssue; nothing is guessed.

- normalizer: the orchestration, the typed fast path's loop and the general (lenient) path
- values: one value -> LabValue on either path (one builder)
- plausibility: the physiologically possible values of each analyte [D]
- ranges: reference ranges converted to canonical units, fallback ranges, range keys
- panels: component panels (blood pressure)
- duplicates: the same analyte, time and value twice
- lookups, concepts: the bounded per-knowledge caches (recipes, concepts, ranges) and what a code means
- quantity: a Quantity's unit and comparator
"""

from cds_service.engine.observations.normalizer import (
    EXCLUDED_STATUSES,
    FLAGGED_STATUSES,
    ObservationNormalizer,
)
from cds_service.engine.observations.quantity import COMPARATORS

__all__ = ["COMPARATORS", "EXCLUDED_STATUSES", "FLAGGED_STATUSES", "ObservationNormalizer"]
