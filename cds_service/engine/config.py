"""Engine configuration: defaults from mappings/engine.yaml, overridable per call."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from cds_service.engine.knowledge import Knowledge


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Knobs of the engine. Every default is documented in mappings/engine.yaml and the README."""

    lookback_days: float = 7.0
    baseline: Literal["infusion", "lymphodepletion"] = "infusion"
    cartox_mode: Literal["strict", "permissive"] = "strict"
    hlh2004_fever_celsius: float = 38.5
    boundary_flag: bool = True
    future_tolerance_minutes: float = 5.0

    @property
    def lookback(self) -> timedelta:
        return timedelta(days=self.lookback_days)

    @classmethod
    def from_knowledge(cls, kb: Knowledge, **overrides: Any) -> EngineConfig:
        defaults = {k: v for k, v in kb.engine_defaults.items() if k != "version"}
        return replace(cls(**defaults), **overrides)
