"""The required criterion: ferritin > 2 x ULN or > 2 x baseline, and/or rapidly rising [D]."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.iec_hs.window import window_start
from cds_service.engine.model import CriterionResult, Evidence, LabValue
from cds_service.engine.units import scaled


def rapid_rise(values: list[LabValue], fold: float, hours: float) -> tuple[LabValue, LabValue] | None:
    """First pair (earlier, later) within `hours` where later >= fold x earlier.

    Linear time: a monotonic deque keeps the lowest positive value of the trailing window (values are
    sorted by time), so thousands of ferritin results cost one pass instead of every pair.
    """
    span = timedelta(hours=hours)
    window: deque[LabValue] = deque()
    for later in values:
        while window and later.time - window[0].time > span:
            window.popleft()
        if window and later.value >= scaled(fold, window[0].value):
            return window[0], later
        if later.value > 0:
            while window and window[-1].value >= later.value:
                window.pop()
            window.append(later)
    return None


def ferritin_required(
    ctx: Context, spec: dict[str, Any], citation: str
) -> tuple[CriterionResult, datetime | None]:
    """The required ferritin criterion and the time it was first fulfilled (the onset estimate)."""
    start = window_start(ctx)
    values = ctx.values("ferritin", start)
    label = ctx.kb.label("iec_hs", "ferritin")
    rise = spec["rapid_rise"]
    described = ctx.kb.label("iec_hs", "ferritin", "threshold")
    if not values:
        return CriterionResult(
            id="ferritin",
            label=label,
            status="unknown",
            threshold=described,
            citation=citation,
            evidence=(Evidence("note", "no ferritin result in the window"),),
            missing=("ferritin",),
        ), None
    baseline = ctx.baseline("ferritin")
    uln_factor = float(spec["ferritin_uln_multiple"]["value"])
    base_factor = float(spec["ferritin_baseline_multiple"]["value"])
    evidence: list[Evidence] = []
    onset: datetime | None = None
    for lab in values:
        over_uln = lab.high is not None and lab.value > scaled(uln_factor, lab.high)
        over_base = (
            baseline is not None and baseline.value > 0 and lab.value > scaled(base_factor, baseline.value)
        )
        if over_uln or over_base:
            reason = (
                f"> {uln_factor:g} x ULN {lab.high:g}"
                if over_uln and lab.high is not None
                else f"> {base_factor:g} x baseline {baseline.value:g}"
                if baseline
                else ""
            )
            evidence.append(value_evidence(ctx.kb, lab, f"first value {reason} in the window"))
            onset = lab.time
            break
    pair = rapid_rise(
        ctx.values("ferritin", start - timedelta(hours=float(rise["within_hours"]))),
        float(rise["fold"]),
        float(rise["within_hours"]),
    )
    if pair is not None:
        evidence.append(
            value_evidence(
                ctx.kb,
                pair[1],
                f"rose from {pair[0].value:g} to {pair[1].value:g} within {rise['within_hours']:g} h",
            )
        )
        onset = min(onset, pair[1].time) if onset else pair[1].time
    peak = max(values, key=lambda lab: lab.value)
    if onset is not None:
        evidence.append(value_evidence(ctx.kb, peak, "peak in the window"))
        return CriterionResult(
            id="ferritin",
            label=label,
            status="met",
            threshold=described,
            citation=citation,
            evidence=tuple(evidence),
        ), onset
    evidence.append(value_evidence(ctx.kb, peak, "peak in the window"))
    if baseline is not None:
        evidence.append(value_evidence(ctx.kb, baseline, "baseline (last value on or before infusion)"))
    if baseline is None and peak.high is not None and peak.value > peak.high:
        evidence.append(Evidence("note", "no baseline ferritin: the > 2 x baseline test cannot be excluded"))
        return CriterionResult(
            id="ferritin",
            label=label,
            status="unknown",
            threshold=described,
            citation=citation,
            evidence=tuple(evidence),
            missing=("ferritin baseline",),
        ), None
    return CriterionResult(
        id="ferritin",
        label=label,
        status="not-met",
        threshold=described,
        citation=citation,
        evidence=tuple(evidence),
    ), None
