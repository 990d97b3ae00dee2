"""Helpers for engine tests: build a one-patient bundle and evaluate it at a fixed instant."""

from __future__ import annotations

from typing import Any

from cds_service.cards.content import load_card_content
from cds_service.engine import EngineConfig, EvaluationResult, evaluate
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.model import CriterionResult
from tests.fhir_builders import SNOMED, bundle, car_t, condition, day, obs, patient

AT = day(13)
KB = load_knowledge()  # the project's own mappings/ (tests of a site's mappings build their own)
CONTENT = load_card_content(KB)

CODES = {
    "ferritin": "2276-4",
    "fibrinogen": "3255-7",
    "triglycerides": "2571-8",
    "triglycerides_mmol": "14927-8",
    "ast": "1920-8",
    "alt": "1742-6",
    "bilirubin": "1975-2",
    "bilirubin_direct": "1968-7",
    "hemoglobin": "718-7",
    "platelets": "777-3",
    "wbc": "6690-2",
    "anc": "751-8",
    "ldh": "2532-0",
    "creatinine": "2160-0",
    "crp": "1988-5",
    "temperature": "8310-5",
    "spo2": "59408-5",
    "o2_flow": "3151-8",
    "weight": "29463-7",
}


def lab(name: str, value: float, unit: str, when_day: float = 12, **kw: Any) -> dict[str, Any]:
    return obs(CODES[name], value, unit, day(when_day), **kw)


def finding(code: str, present: bool = True, text: str | None = None) -> dict[str, Any]:
    return condition(SNOMED, code, day(-30), verification="confirmed" if present else "refuted", text=text)


def text_finding(text: str, present: bool = True) -> dict[str, Any]:
    """A finding known only by text (no verified code exists, e.g. hemophagocytosis)."""
    resource = condition(SNOMED, "0", day(5), verification="confirmed" if present else "refuted", text=text)
    resource["code"] = {"text": text}
    return resource


def run(*resources: dict[str, Any], at: Any = AT, therapy: bool = True, **config: Any) -> EvaluationResult:
    items = [patient(), *([car_t()] if therapy else []), *resources]
    cfg = EngineConfig(**config) if config else None
    return evaluate(bundle(*items), at=at, config=cfg, knowledge=KB)


def criterion(criteria: tuple[CriterionResult, ...], cid: str) -> CriterionResult:
    return next(c for c in criteria if c.id == cid)
