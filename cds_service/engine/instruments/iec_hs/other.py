"""The other manifestations: context for the clinician, and with the ferritin signal but no HLH-specific
finding they make the status "possible" (never "met")."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.common import any_of, finding_criterion, threshold_criterion
from cds_service.engine.model import CriterionResult, Evidence, Status
from cds_service.engine.units import scaled


def _above_uln(ctx: Context, id: str, analytes: list[str], citation: str, start: datetime) -> CriterionResult:
    label = ctx.kb.label("iec_hs", id)
    statuses: list[Status] = []
    evidence: list[Evidence] = []
    for analyte in analytes:
        lab = ctx.worst(analyte, start)
        if lab is None or lab.high is None:
            statuses.append("unknown")
            continue
        over = lab.value > lab.high
        statuses.append("met" if over else "not-met")
        item = value_evidence(ctx.kb, lab, f"{'>' if over else 'not >'} ULN {lab.high:g}")
        evidence.append(replace(item, decides=over))
    status = any_of(statuses)
    return CriterionResult(
        id=id,
        label=label,
        status=status,
        threshold="> ULN",
        citation=citation,
        evidence=tuple(evidence),
        missing=tuple(a for a, s in zip(analytes, statuses, strict=True) if s == "unknown")
        if status == "unknown"
        else (),
    )


def _pulmonary(ctx: Context, spec: dict[str, Any], citation: str, start: datetime) -> CriterionResult:
    label = ctx.kb.label("iec_hs", "pulmonary")
    edema = finding_criterion(
        ctx, id="pulmonary", label=label, findings=[spec["finding"]], citation=citation, since=start
    )
    spo2 = ctx.kb.threshold("spo2", spec["spo2"])
    flow = ctx.kb.threshold("o2_flow", spec["o2_flow"])
    hits = [lab for lab in ctx.values("spo2", start) if spo2.test(lab.value)]
    hits += [lab for lab in ctx.values("o2_flow", start) if flow.test(lab.value)]
    if hits:
        return CriterionResult(
            id="pulmonary",
            label=label,
            status="met",
            threshold=f"SpO2 {spo2.describe()} or O2 flow {flow.describe()} [D]",
            citation=citation,
            evidence=(value_evidence(ctx.kb, hits[0]),),
        )
    if edema.status == "met":
        return edema
    if ctx.values("spo2", start):
        return CriterionResult(
            id="pulmonary",
            label=label,
            status="not-met",
            threshold=f"SpO2 {spo2.describe()} [D]",
            citation=citation,
            evidence=(
                value_evidence(
                    ctx.kb, min(ctx.values("spo2", start), key=lambda lab: lab.value), "lowest saturation"
                ),
            ),
        )
    return CriterionResult(
        id="pulmonary",
        label=label,
        status="unknown",
        threshold=None,
        citation=citation,
        evidence=(Evidence("note", "no oxygen saturation results"),),
        missing=("spo2",),
    )


def renal(ctx: Context, spec: dict[str, Any], start: datetime) -> CriterionResult:
    factor = float(spec["creatinine_baseline_multiple"]["value"])
    label = ctx.kb.label("iec_hs", "renal")
    source = spec.get("source", "kdigo2012")
    lab = ctx.worst("creatinine", start)
    baseline = ctx.baseline("creatinine")
    if lab is None or baseline is None:
        return CriterionResult(
            id="renal",
            label=label,
            status="unknown",
            threshold=ctx.kb.label("iec_hs", "renal", "threshold"),
            citation=source,
            evidence=(Evidence("note", "creatinine in the window and a baseline are both needed"),),
            missing=("creatinine",),
            unverified=True,
        )
    met = lab.value >= scaled(factor, baseline.value)
    return CriterionResult(
        id="renal",
        label=label,
        status="met" if met else "not-met",
        threshold=ctx.kb.label("iec_hs", "renal", "threshold"),
        citation=source,
        evidence=(value_evidence(ctx.kb, lab, f"baseline {baseline.value:g}"),),
        unverified=True,
    )


def other_manifestations(
    ctx: Context, doc: dict[str, Any], citation: str, start: datetime
) -> list[CriterionResult]:
    """Read from `start`, the IEC-HS phase (the ferritin low before its rise, within the window): a sign of
    the CRS before it is not a manifestation of this syndrome (the seed, section 2)."""
    other = doc["other"]
    infusion = ctx.therapy.infusion_time
    fever = threshold_criterion(
        ctx,
        id="fever",
        label=ctx.kb.label("iec_hs", "fever"),
        analyte="temperature",
        spec=other["fever"]["threshold"],
        citation=other["fever"]["source"],
        start=start,
        unverified=True,
    )
    tg = threshold_criterion(
        ctx,
        id="hypertriglyceridemia",
        label=ctx.kb.label("iec_hs", "hypertriglyceridemia"),
        analyte="triglycerides",
        spec=other["hypertriglyceridemia"]["threshold"],
        citation=citation,
        start=start,
    )
    return [
        _above_uln(ctx, "ldh", ["ldh"], citation, start),
        _above_uln(ctx, "coagulation", other["coagulation"]["analytes"], citation, start),
        _above_uln(ctx, "direct-bilirubin", ["bilirubin_direct"], citation, start),
        finding_criterion(
            ctx,
            id="splenomegaly",
            label=ctx.kb.label("iec_hs", "splenomegaly"),
            findings=["splenomegaly"],
            citation=citation,
            since=infusion,
        ),
        fever,
        finding_criterion(
            ctx,
            id="neurotoxicity",
            label=ctx.kb.label("iec_hs", "neurotoxicity"),
            findings=["icans"],
            citation=citation,
            since=start,
        ),
        _pulmonary(ctx, other["pulmonary"], other["pulmonary"].get("source", citation), start),
        renal(ctx, other["renal"], start),
        tg,
    ]
