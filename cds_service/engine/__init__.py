"""The clinical engine: FHIR resources -> normalized observations -> timeline -> criteria -> grade.

Public API: :func:`evaluate` (see :mod:`cds_service.engine.evaluate`).
"""

from __future__ import annotations

from cds_service.engine.config import EngineConfig
from cds_service.engine.evaluate import evaluate
from cds_service.engine.model import EvaluationResult

__all__ = ["EngineConfig", "EvaluationResult", "evaluate"]
