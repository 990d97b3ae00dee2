"""The most common manifestations (the seed's Table 1), split by what they can decide [D] (register):

* HLH-specific: hepatic transaminases > 5 x ULN (baseline normal) or > 5 x baseline, hypofibrinogenemia
  (< 150 mg/dL or < LLN), hemophagocytosis. With the ferritin signal they make "met". They are read from
  the start of the IEC-HS phase (the low before the ferritin's rise) when there is one, so a fibrinogen
  that fell during CRS, before the rise, does not count.
* Non-specific: cytopenias, new or worsening relative to the post-lymphodepletion course (almost every
  patient has cytopenias after lymphodepleting chemotherapy, the seed's section 2): a count that had
  recovered from its post-lymphodepletion low and falls again by >= the worsening fraction, or that falls
  below LLN after staying at or above it since infusion. They can make "possible", never "met".
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from datetime import datetime, timedelta
from math import inf
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.common import any_of, threshold_criterion
from cds_service.engine.instruments.iec_hs.window import phase_window_start
from cds_service.engine.instruments.organ import multiple_of
from cds_service.engine.model import CriterionResult, Evidence, LabValue, Status
from cds_service.engine.units import scaled


def transaminases(
    ctx: Context, spec: dict[str, Any], citation: str, phase_start: datetime | None
) -> CriterionResult:
    statuses: list[Status] = []
    evidence: list[Evidence] = []
    missing: list[str] = []
    start = phase_window_start(ctx, phase_start)
    for analyte in spec["analytes"]:
        lab = ctx.worst(analyte, start)
        if lab is None:
            statuses.append("unknown")
            missing.append(analyte)
            continue
        status, item = multiple_of(ctx, lab, {"multiple": spec["uln_multiple"]})
        statuses.append(status)
        evidence.append(replace(item, decides=True) if status == "met" else item)
    status = any_of(statuses)
    return CriterionResult(
        id="transaminases",
        label=ctx.kb.label("iec_hs", "transaminases"),
        status=status,
        threshold=ctx.kb.label("iec_hs", "transaminases", "threshold"),
        citation=citation,
        evidence=tuple(evidence),
        missing=tuple(missing) if status == "unknown" else (),
    )


def hypofibrinogenemia(
    ctx: Context, spec: dict[str, Any], citation: str, phase_start: datetime | None
) -> CriterionResult:
    start = phase_window_start(ctx, phase_start)
    base = threshold_criterion(
        ctx,
        id="hypofibrinogenemia",
        label=ctx.kb.label("iec_hs", "hypofibrinogenemia"),
        analyte="fibrinogen",
        spec=spec["threshold"],
        citation=citation,
        start=start,
    )
    lab = ctx.worst("fibrinogen", start)
    threshold = f"{base.threshold} or < LLN"
    if base.status == "not-met" and lab is not None and lab.low is not None and lab.value < lab.low:
        evidence = (value_evidence(ctx.kb, lab, f"< LLN {lab.low:g}"),)
        return CriterionResult(
            id=base.id,
            label=base.label,
            status="met",
            threshold=threshold,
            citation=citation,
            evidence=evidence,
        )
    return CriterionResult(
        id=base.id,
        label=base.label,
        status=base.status,
        threshold=threshold,
        citation=citation,
        evidence=base.evidence,
        missing=base.missing,
    )


def _worsening(
    series: list[LabValue], start: datetime, fraction: float, recent: timedelta
) -> tuple[LabValue, LabValue] | None:
    """(reference, value): a value in the window (from `start`) that is the second of two results >= the
    fraction below a recovery in the `recent` time before it (7 days [D]). A recovery is the highest value
    of that time if it is >= (1 + fraction) x the lowest value before it since infusion, so the fall from
    it is not the expected post-lymphodepletion decline; one low result can be noise, so two are needed."""
    lowest = [inf] * (len(series) + 1)  # lowest[i]: the lowest value before index i
    for i, lab in enumerate(series):
        lowest[i + 1] = min(lowest[i], lab.value)
    first = bisect_left([lab.time for lab in series], start)
    begin = 0
    limits: dict[int, float | None] = {}  # recovery index -> the limit below it (None: not a recovery)
    for index in range(first, len(series)):
        lab = series[index]
        while begin < index and lab.time - series[begin].time > recent:
            begin += 1
        if begin == index:
            continue
        best = max(range(begin, index), key=lambda i: series[i].value)
        reference = series[best]
        if best not in limits:
            recovered = reference.value >= scaled(1.0 + fraction, lowest[best])
            limits[best] = scaled(1.0 - fraction, reference.value) if recovered else None
        limit = limits[best]
        if limit is None:
            continue
        fallen = sum(1 for v in series[best + 1 : index + 1] if v.value <= limit)
        if fallen >= 2 and lab.value <= limit:
            return reference, lab
    return None


def _lineage(
    ctx: Context, analyte: str, fraction: float, recent: timedelta, start: datetime
) -> tuple[Status, Evidence | None, str | None]:
    """(status, evidence, what is missing) for one lineage."""
    nadir = ctx.worst(analyte, start)
    if nadir is None:
        return "unknown", None, analyte
    if nadir.low is None:
        return "unknown", value_evidence(ctx.kb, nadir, "no LLN to judge a new cytopenia"), None
    series = ctx.values(analyte, ctx.therapy.infusion_time or ctx.window_start, ctx.at)
    worse = _worsening(series, start, fraction, recent)
    if worse is not None:
        reference, lab = worse
        text = f"fell >= {fraction:.0%} from {reference.value:g}, after recovering from its post-LD low"
        return "met", replace(value_evidence(ctx.kb, lab, text), decides=True), None
    baseline = ctx.baseline(analyte)
    history = [baseline] if baseline is not None else []
    history += [lab for lab in series if lab.time < nadir.time]
    if not history:
        return (
            "unknown",
            value_evidence(ctx.kb, nadir, "no earlier value to compare with"),
            f"{analyte} baseline",
        )
    if nadir.value < nadir.low and all(lab.value >= nadir.low for lab in history):
        return (
            "met",
            replace(value_evidence(ctx.kb, nadir, f"new below LLN {nadir.low:g}"), decides=True),
            None,
        )
    text = "not new or worsening after the post-lymphodepletion course"
    return "not-met", value_evidence(ctx.kb, nadir, text), None


def cytopenias(
    ctx: Context, spec: dict[str, Any], citation: str, phase_start: datetime | None
) -> CriterionResult:
    fraction = float(spec["worsening_fraction"])
    recent = timedelta(days=float(spec["recovery_lookback_days"]))
    start = phase_window_start(ctx, phase_start)
    found = [_lineage(ctx, analyte, fraction, recent, start) for analyte in spec["analytes"]]
    status = any_of([s for s, _, _ in found])
    return CriterionResult(
        id="cytopenias",
        label=ctx.kb.label("iec_hs", "cytopenias"),
        status=status,
        threshold=ctx.kb.label("iec_hs", "cytopenias", "threshold"),
        citation=spec.get("source", citation),
        evidence=tuple(e for _, e, _ in found if e is not None),
        missing=tuple(m for s, _, m in found if m is not None) if status == "unknown" else (),
    )
