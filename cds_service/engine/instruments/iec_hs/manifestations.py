"""The most common manifestations: transaminases, hypofibrinogenemia, hemophagocytosis, cytopenias."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.common import any_of, threshold_criterion
from cds_service.engine.instruments.iec_hs.window import window_start
from cds_service.engine.model import CriterionResult, Evidence, Status


def transaminases(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    from cds_service.engine.instruments.organ import multiple_of

    statuses: list[Status] = []
    evidence: list[Evidence] = []
    missing: list[str] = []
    start = window_start(ctx)
    for analyte in spec["analytes"]:
        lab = ctx.worst(analyte, start)
        if lab is None:
            statuses.append("unknown")
            missing.append(analyte)
            continue
        status, item = multiple_of(ctx, lab, {"multiple": spec["uln_multiple"]})
        statuses.append(status)
        evidence.append(item)
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


def hypofibrinogenemia(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    base = threshold_criterion(
        ctx,
        id="hypofibrinogenemia",
        label=ctx.kb.label("iec_hs", "hypofibrinogenemia"),
        analyte="fibrinogen",
        spec=spec["threshold"],
        citation=citation,
        start=window_start(ctx),
    )
    lab = ctx.worst("fibrinogen", window_start(ctx))
    if base.status == "not-met" and lab is not None and lab.low is not None and lab.value < lab.low:
        return CriterionResult(
            id=base.id,
            label=base.label,
            status="met",
            threshold=f"{base.threshold} or < LLN",
            citation=citation,
            evidence=(value_evidence(ctx.kb, lab, f"< LLN {lab.low:g}"),),
        )
    return CriterionResult(
        id=base.id,
        label=base.label,
        status=base.status,
        threshold=f"{base.threshold} or < LLN",
        citation=citation,
        evidence=base.evidence,
        missing=base.missing,
    )


def cytopenias(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    """[D] New onset (reference >= LLN, nadir < LLN) or worsening (reference < LLN,
    nadir <= (1 - f) x reference). The reference is the baseline, else the earliest value after
    infusion and before the window."""
    fraction = float(spec["worsening_fraction"])
    statuses: list[Status] = []
    evidence: list[Evidence] = []
    missing: list[str] = []
    start = window_start(ctx)
    for analyte in spec["analytes"]:
        nadir = ctx.worst(analyte, start)
        reference = ctx.baseline(analyte)
        ref_label = "baseline"
        if reference is None and ctx.therapy.infusion_time is not None:
            earlier = ctx.values(analyte, ctx.therapy.infusion_time, start - timedelta(microseconds=1))
            reference = earlier[0] if earlier else None
            ref_label = "earliest post-infusion value"
        if nadir is None or reference is None or nadir.low is None:
            statuses.append("unknown")
            missing.append(analyte)
            continue
        limit = nadir.low
        if reference.value >= limit:
            met = nadir.value < limit
            text = (
                f"new below LLN {limit:g} ({ref_label} {reference.value:g})"
                if met
                else f"not below LLN {limit:g}"
            )
        else:
            met = nadir.value <= (1 - fraction) * reference.value
            text = (
                f"worsened >= {fraction:.0%} from {ref_label} {reference.value:g}"
                if met
                else f"not worse than {ref_label} {reference.value:g} by {fraction:.0%}"
            )
        statuses.append("met" if met else "not-met")
        evidence.append(value_evidence(ctx.kb, nadir, text))
    status = any_of(statuses)
    return CriterionResult(
        id="cytopenias",
        label=ctx.kb.label("iec_hs", "cytopenias"),
        status=status,
        threshold=ctx.kb.label("iec_hs", "cytopenias", "threshold"),
        citation=spec.get("source", citation),
        evidence=tuple(evidence),
        missing=tuple(missing) if status == "unknown" else (),
    )
