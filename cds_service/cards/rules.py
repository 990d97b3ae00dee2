"""When the patient-view card speaks, and how loudly. Project rules [D], documented in
docs/clinical-content.md with their reasoning:

* `met` is critical; everything else is info ("possible" stays quiet: it names what would decide it).
* A full screening card inside the risk window after the infusion (`speak.risk_window_days`), or at any time
  when the data show an inflammatory signal: the IEC-HS ferritin criterion met (elevated and rising again), or
  the latest ferritin in the window above the criterion's ULN multiple. Otherwise no card.
* A prefetch key that could not be had is never silent: inside the window or with a signal, an undecided or
  negative screen becomes an info card that says what could not be seen; without the infusion record (its keys
  missing) a ferritin signal gives a "possible" card instead of nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cds_service.cards.content import CardContent
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult, LabValue

Indicator = Literal["info", "warning", "critical"]
Kind = Literal["met", "possible", "indeterminate", "incomplete", "unseen"]
THERAPY_KEYS = frozenset({"procedures", "medicationAdministrations", "medicationRequests"})


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind | None  # None: no card
    indicator: Indicator


def ferritin_signal(result: EvaluationResult, kb: Knowledge) -> LabValue | None:
    """The ferritin that makes an inflammatory signal (criterion met, or above the ULN multiple), if any."""
    values = [v for v in result.labs.get("ferritin", ()) if result.window_start <= v.time <= result.at]
    if not values:
        return None
    latest = values[-1]
    iec = IEC_HS.result(result.instruments)
    if any(c.id == "ferritin" and c.status == "met" for c in iec.criteria):
        return latest
    multiple = float(kb.criteria["iec_hs"]["required"]["ferritin_uln_multiple"]["value"])
    high = latest.high if latest.high is not None else kb.ranges.get("ferritin", (None, None))[1]
    return latest if high is not None and latest.value > multiple * high else None


def in_window(result: EvaluationResult, content: CardContent) -> bool:
    day = result.therapy.day_post_infusion
    return day is None or day <= content.risk_window_days


def decide(result: EvaluationResult, content: CardContent, kb: Knowledge, gaps: tuple[str, ...]) -> Decision:
    signal = ferritin_signal(result, kb) is not None
    if not result.therapy.found:
        unseen = bool(THERAPY_KEYS & set(gaps)) and signal
        return Decision("unseen" if unseen else None, "info")
    status = IEC_HS.result(result.instruments).status
    speaks = in_window(result, content) or signal
    if status == "met":
        return Decision("met", "critical")
    if not speaks:
        return Decision(None, "info")
    if status == "possible":
        return Decision("possible", "info")
    if status == "indeterminate":
        return Decision("indeterminate", "info")
    return Decision("incomplete" if gaps else None, "info")
