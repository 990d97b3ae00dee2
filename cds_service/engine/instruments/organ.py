"""CTCAE v5.0 grade >= 3 organ toxicity from labs and baselines (for CARTOX and Shah).

Lab grades (reference 3.1): AST/ALT > 5 x ULN (baseline normal) or > 5 x baseline (baseline abnormal);
bilirubin > 3 x; creatinine > 3 x baseline or > 3 x ULN. Unknown baseline: graded against ULN, and the
evidence says so. Pulmonary edema grade >= 3 uses flagged proxies [D] (reference 3.1).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.common import any_of, finding_criterion
from cds_service.engine.model import CriterionResult, Evidence, LabValue, Status
from cds_service.engine.units import scaled

CTCAE = "ctcae5"


def multiple_of(ctx: Context, lab: LabValue, spec: dict[str, Any]) -> tuple[Status, Evidence]:
    """Is `lab` above `multiple` x ULN (baseline normal) or x baseline (baseline abnormal)?"""
    multiple = float(spec["multiple"])
    baseline = ctx.baseline(lab.analyte)
    limits: list[tuple[float, str]] = []
    if baseline is not None and baseline.high is not None and baseline.value > baseline.high:
        limits.append(
            (
                scaled(multiple, baseline.value),
                f"{multiple:g} x baseline {baseline.value:g} (baseline abnormal)",
            )
        )
    elif lab.high is not None:
        basis = "baseline normal" if baseline is not None else "baseline unknown: graded against ULN"
        limits.append((scaled(multiple, lab.high), f"{multiple:g} x ULN {lab.high:g} ({basis})"))
    if spec.get("baseline_or_uln") and baseline is not None and lab.high is not None:
        limits = [
            (scaled(multiple, baseline.value), f"{multiple:g} x baseline {baseline.value:g}"),
            (scaled(multiple, lab.high), f"{multiple:g} x ULN {lab.high:g}"),
        ]
    if not limits:
        return "unknown", Evidence(
            "note", f"{ctx.kb.display(lab.analyte)}: no ULN or baseline to grade against"
        )
    exceeded = [text for limit, text in limits if lab.value > limit]
    limit, text = min(limits)
    evidence = value_evidence(
        ctx.kb,
        lab,
        f"> {exceeded[0] if exceeded else text}" if exceeded else f"not > {text}",
        limit,
        ctx.config.boundary_flag,
    )
    return ("met" if exceeded else "not-met"), evidence


def lab_grade3(
    ctx: Context, id: str, label: str, analytes: list[str], start: datetime, end: datetime
) -> CriterionResult:
    grade3 = ctx.kb.ctcae["grade3"]
    statuses: list[Status] = []
    evidence: list[Evidence] = []
    missing: list[str] = []
    for analyte in analytes:
        lab = ctx.worst(analyte, start, end)
        if lab is None:
            statuses.append("unknown")
            missing.append(analyte)
            continue
        status, item = multiple_of(ctx, lab, grade3[analyte])
        statuses.append(status)
        evidence.append(item)
    status = any_of(statuses)
    return CriterionResult(
        id=id,
        label=label,
        status=status,
        threshold=ctx.kb.label("ctcae", "lab_grade"),
        citation=CTCAE,
        evidence=tuple(evidence),
        missing=tuple(missing) if status == "unknown" else (),
    )


def liver(ctx: Context, start: datetime, end: datetime) -> CriterionResult:
    label = ctx.kb.label("ctcae", "liver")
    return lab_grade3(ctx, "liver", label, ["bilirubin_total", "ast", "alt"], start, end)


def kidney(ctx: Context, start: datetime, end: datetime) -> CriterionResult:
    result = lab_grade3(ctx, "kidney", ctx.kb.label("ctcae", "kidney"), ["creatinine"], start, end)
    oliguria = ctx.finding("oliguria")
    if result.status != "met" and oliguria.state == "present":
        note = Evidence(
            "finding", "oliguria recorded: its CTCAE grade needs manual review", oliguria.resource_id
        )
        return CriterionResult(
            id=result.id,
            label=result.label,
            status="unknown",
            threshold=result.threshold,
            citation=result.citation,
            evidence=result.evidence + (note,),
            missing=result.missing,
            unverified=True,
        )
    return result


def lung(ctx: Context, start: datetime, end: datetime) -> CriterionResult:
    """Pulmonary edema grade >= 3 by proxy [D]: ventilation, or O2 support with SpO2 < 88%."""
    spec = ctx.kb.ctcae["pulmonary"]
    low_threshold = ctx.kb.threshold("spo2", spec["spo2"])
    label = ctx.kb.label("ctcae", "lung")
    ventilation = [p for p in ctx.procedures if p.kind == "mechanical_ventilation" and start <= p.time <= end]
    if ventilation:
        first = ventilation[0]
        ev = Evidence(
            "procedure",
            f"positive-pressure ventilation ({first.text or 'procedure'})",
            first.resource_id,
            time=first.time,
        )
        return CriterionResult(
            id="lung",
            label=label,
            status="met",
            threshold="proxy [D]",
            citation="ctcae5_clinical",
            evidence=(ev,),
            unverified=True,
        )
    spo2 = ctx.values("spo2", start, end)
    if not spo2:
        return CriterionResult(
            id="lung",
            label=label,
            status="unknown",
            threshold="proxy [D]",
            citation="ctcae5_clinical",
            evidence=(Evidence("note", "no oxygen saturation results"),),
            missing=("spo2",),
            unverified=True,
        )
    low = [lab for lab in spo2 if low_threshold.test(lab.value)]
    support = _oxygen_support(ctx, start, end, spec)
    edema = finding_criterion(
        ctx, id="edema", label="", findings=["pulmonary_edema"], citation="ctcae5_clinical"
    )
    if low and (support or edema.status == "met"):
        met_evidence = (
            value_evidence(ctx.kb, low[0], "hypoxia", low_threshold.value, ctx.config.boundary_flag),
            *support[:1],
        )
        return CriterionResult(
            id="lung",
            label=label,
            status="met",
            threshold=ctx.kb.label("ctcae", "lung", "threshold"),
            citation="ctcae5_clinical",
            evidence=met_evidence,
            unverified=True,
        )
    worst = min(spo2, key=lambda lab: lab.value)
    ev2 = value_evidence(ctx.kb, worst, "lowest saturation", low_threshold.value, ctx.config.boundary_flag)
    return CriterionResult(
        id="lung",
        label=label,
        status="not-met",
        threshold=ctx.kb.label("ctcae", "lung", "threshold"),
        citation="ctcae5_clinical",
        evidence=(ev2,),
        unverified=True,
    )


def _oxygen_support(ctx: Context, start: datetime, end: datetime, spec: dict[str, Any]) -> list[Evidence]:
    found: list[Evidence] = []
    for analyte in ("o2_flow", "fio2"):
        threshold = ctx.kb.threshold(analyte, spec[analyte])
        found += [
            value_evidence(ctx.kb, lab, "oxygen support")
            for lab in ctx.values(analyte, start, end)
            if threshold.test(lab.value)
        ]
    found += [
        Evidence("procedure", "supplemental oxygen", p.resource_id, time=p.time)
        for p in ctx.procedures
        if p.kind == "oxygen_therapy" and start <= p.time <= end
    ]
    return found


def hemophagocytosis(ctx: Context, findings: list[str]) -> CriterionResult:
    return finding_criterion(
        ctx,
        id="hemophagocytosis",
        label=ctx.kb.label("ctcae", "hemophagocytosis"),
        findings=findings,
        citation="neelapu2018",
    )
