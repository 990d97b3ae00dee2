"""HLH-2004 (Henter JI, et al. Pediatr Blood Cancer 2007;48:124-131) and HLH-94 (review Table 1).

HLH-2004: >= 5 of 8 criteria (the molecular path is not evaluable from labs). Operators follow the original
(register 6-11): fasting TG >= 265 mg/dL or fibrinogen <= 150 mg/dL, ferritin >= 500, sCD25 >= 2400 U/mL,
cytopenias by ANC (not WBC) with the infant Hb rule. `fulfilled` is null while the unknowns could decide it.

HLH-94: the review lists five features without thresholds or count. UNVERIFIED operationalisation (flagged
in mappings/criteria/hlh94.yaml): all five required, each with the HLH-2004 definition of the same feature.
"""

from __future__ import annotations

from typing import Any

from cds_service.engine.context import Context
from cds_service.engine.instruments.common import (
    any_of,
    count_status,
    finding_criterion,
    lineages,
    threshold_criterion,
)
from cds_service.engine.model import CountResult, CriterionResult, Evidence


def _cytopenias(
    ctx: Context, instrument: str, id: str, spec: dict[str, Any], citation: str
) -> CriterionResult:
    overrides = None
    infant_days = spec.get("infant_max_age_days")
    if (
        infant_days is not None
        and ctx.patient.age_days is not None
        and ctx.patient.age_days < int(infant_days)
    ):
        overrides = {"hemoglobin": spec["infant_hemoglobin"]}
    found = lineages(ctx, spec["lineages"], citation, overrides)
    met = sum(s.status == "met" for s in found)
    unknown = sum(s.status == "unknown" for s in found)
    required = int(spec["min_lineages"])
    evidence = tuple(s.evidence for s in found if s.evidence is not None)
    if overrides:
        evidence += (Evidence("note", ctx.kb.label(instrument, "infant_note")),)
    return CriterionResult(
        id=id,
        label=ctx.kb.label(instrument, id),
        status=count_status(met, unknown, required),
        threshold=ctx.kb.label(instrument, id, "threshold"),
        citation=citation,
        evidence=evidence,
        missing=tuple(s.analyte for s in found if s.status == "unknown"),
    )


def _tg_or_fibrinogen(
    ctx: Context, instrument: str, id: str, spec: dict[str, Any], citation: str
) -> CriterionResult:
    tg = threshold_criterion(
        ctx, id="tg", label="", analyte="triglycerides", spec=spec["triglycerides"], citation=citation
    )
    fib = threshold_criterion(
        ctx, id="fib", label="", analyte="fibrinogen", spec=spec["fibrinogen"], citation=citation
    )
    evidence = tg.evidence + fib.evidence
    tg_lab = ctx.worst("triglycerides")
    if tg_lab is not None and not tg_lab.fasting:
        evidence += (
            Evidence("note", "triglyceride result is not coded as fasting (the original requires fasting)"),
        )
    status = any_of([tg.status, fib.status])
    missing = tuple(m for m in tg.missing + fib.missing) if status == "unknown" else ()
    return CriterionResult(
        id=id,
        label=ctx.kb.label(instrument, id),
        status=status,
        threshold=f"{tg.threshold} or {fib.threshold}",
        citation=citation,
        evidence=evidence,
        missing=missing,
    )


def _criterion(
    ctx: Context, instrument: str, key: str, spec: dict[str, Any], citation: str, unverified: bool
) -> CriterionResult:
    if key in {"cytopenias", "bicytopenia"}:
        return _cytopenias(ctx, instrument, key, spec, citation)
    if key == "triglycerides_or_fibrinogen":
        return _tg_or_fibrinogen(ctx, instrument, key, spec, citation)
    if "findings" in spec or "finding" in spec:
        findings = spec.get("findings") or [spec["finding"]]
        return finding_criterion(
            ctx,
            id=key,
            label=ctx.kb.label(instrument, key),
            findings=findings,
            citation=citation,
            unverified=unverified,
        )
    threshold = dict(spec["threshold"])
    if key == "fever":
        threshold["value"] = ctx.config.hlh2004_fever_celsius
        threshold["unit"] = "Cel"
    return threshold_criterion(
        ctx,
        id=key,
        label=ctx.kb.label(instrument, key),
        analyte=spec["analyte"],
        spec=threshold,
        citation=citation,
        unverified=unverified,
    )


def _count(ctx: Context, instrument: str, all_required: bool) -> CountResult:
    doc = ctx.kb.criteria[instrument]
    citation = doc["citation"]
    unverified = bool(doc.get("unverified", False))
    criteria = tuple(
        _criterion(ctx, instrument, key, spec, citation, unverified) for key, spec in doc["criteria"].items()
    )
    met = sum(c.status == "met" for c in criteria)
    unknown = sum(c.status == "unknown" for c in criteria)
    required = int(doc["required_count"])
    status = count_status(met, unknown, required)
    if all_required and any(c.status == "not-met" for c in criteria):
        status = "not-met"
    caveat = doc.get("caveat", {}).get("text")
    return CountResult(
        met_count=met,
        unknown_count=unknown,
        total=len(criteria),
        required=required,
        fulfilled={"met": True, "not-met": False, "unknown": None}[status],
        criteria=criteria,
        citation=citation,
        unverified=unverified,
        caveat=caveat,
    )


def evaluate_hlh2004(ctx: Context) -> CountResult:
    return _count(ctx, "hlh2004", all_required=False)


def evaluate_hlh94(ctx: Context) -> CountResult:
    return _count(ctx, "hlh94", all_required=True)


VERDICT = {True: "fulfilled", False: "not fulfilled", None: "undecided"}


def summarize(result: CountResult) -> str:
    counts = f"{result.met_count}/{result.total} met, {result.unknown_count} unknown"
    return f"{counts} (needs {result.required}) -> {VERDICT[result.fulfilled]}"


def unverified(result: CountResult) -> bool:
    return result.unverified
