"""HScore (Fardet L, et al. Arthritis Rheumatol 2014;66:2613-2620).

Nine variables with inclusive bands exactly as the original (discrepancy register 1-5), cytopenias by
Hb <= 9.2 g/dL, WBC <= 5.0e9/L, platelets <= 110e9/L. `score` counts known points; unknown inputs widen
`score_min..score_max` and never change `score`. Probability comes from Fardet's published table
(band as published, point estimate by linear interpolation between the table's anchors): no logistic
formula is used.
"""

from __future__ import annotations

from typing import Any, Literal

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.common import (
    band_points,
    describe_bands,
    lineages,
    nearest_threshold,
)
from cds_service.engine.model import CriterionResult, Evidence, HScoreResult, Status

INSTRUMENT = "hscore"


def _status(points_min: int, points_max: int) -> Status:
    if points_min != points_max:
        return "unknown"
    return "met" if points_min > 0 else "not-met"


def _finding_points(
    ctx: Context, key: str, spec: dict[str, Any], citation: str, label: str
) -> CriterionResult:
    record = ctx.finding(spec["finding"])
    yes = int(spec["points_yes"])
    if record.state == "present":
        evidence = (
            Evidence(
                "finding",
                f"{ctx.kb.finding_display[record.finding]}: recorded",
                record.resource_id,
                time=record.onset,
            ),
        )
        return CriterionResult(
            id=key,
            label=label,
            status="met",
            threshold=ctx.kb.label(INSTRUMENT, key, "threshold"),
            citation=citation,
            evidence=evidence,
            points=yes,
            points_min=yes,
            points_max=yes,
        )
    if record.state == "absent":
        evidence = (
            Evidence("finding", f"{ctx.kb.finding_display[record.finding]}: refuted", record.resource_id),
        )
        return CriterionResult(
            id=key,
            label=label,
            status="not-met",
            threshold=ctx.kb.label(INSTRUMENT, key, "threshold"),
            citation=citation,
            evidence=evidence,
            points=0,
            points_min=0,
            points_max=0,
        )
    note = Evidence("note", "not recorded (unknown, not assumed absent)")
    return CriterionResult(
        id=key,
        label=label,
        status="unknown",
        threshold=ctx.kb.label(INSTRUMENT, key, "threshold"),
        citation=citation,
        evidence=(note,),
        missing=(spec["finding"],),
        points=0,
        points_min=0,
        points_max=yes,
    )


def _band_criterion(
    ctx: Context, key: str, spec: dict[str, Any], citation: str, label: str
) -> CriterionResult:
    analyte = spec["analyte"]
    bands = spec["bands"]
    top = max(int(b["points"]) for b in bands)
    lab = ctx.worst(analyte)
    described = describe_bands(ctx, analyte, bands, citation)
    if lab is None:
        note = Evidence("note", f"no {ctx.kb.display(analyte)} result in the window")
        return CriterionResult(
            id=key,
            label=label,
            status="unknown",
            threshold=described,
            citation=citation,
            evidence=(note,),
            missing=(analyte,),
            points=0,
            points_min=0,
            points_max=top,
        )
    low, high, matched = band_points(ctx, analyte, bands, citation, lab)
    edge = nearest_threshold(ctx, analyte, bands, lab)
    evidence = value_evidence(ctx.kb, lab, f"band {' / '.join(matched)}", edge, ctx.config.boundary_flag)
    return CriterionResult(
        id=key,
        label=label,
        status=_status(low, high),
        threshold=described,
        citation=citation,
        evidence=(evidence,),
        points=low,
        points_min=low,
        points_max=high,
    )


def _organomegaly(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    records = [ctx.finding(name) for name in spec["findings"]]
    present = sum(r.state == "present" for r in records)
    unknown = sum(r.state == "unknown" for r in records)
    scale = {0: 0, 1: int(spec["points_one"]), 2: int(spec["points_both"])}
    low, high = scale[present], scale[present + unknown]
    evidence = tuple(
        Evidence(
            "finding",
            f"{ctx.kb.finding_display[r.finding]}: {'recorded' if r.state == 'present' else r.state}",
            r.resource_id,
        )
        for r in records
    )
    missing = tuple(r.finding for r in records if r.state == "unknown")
    return CriterionResult(
        id="organomegaly",
        label=ctx.kb.label(INSTRUMENT, "organomegaly"),
        status=_status(low, high),
        threshold=ctx.kb.label(INSTRUMENT, "organomegaly", "threshold"),
        citation=citation,
        evidence=evidence,
        missing=missing,
        points=low,
        points_min=low,
        points_max=high,
    )


def _cytopenias(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    found = lineages(ctx, spec["lineages"], citation)
    met = sum(s.status == "met" for s in found)
    unknown = sum(s.status == "unknown" for s in found)
    table = {int(k): int(v) for k, v in spec["points_by_count"].items()}
    low, high = table[met], table[met + unknown]
    evidence = tuple(s.evidence for s in found if s.evidence is not None)
    missing = tuple(s.analyte for s in found if s.status == "unknown")
    return CriterionResult(
        id="cytopenias",
        label=ctx.kb.label(INSTRUMENT, "cytopenias"),
        status=_status(low, high),
        threshold=ctx.kb.label(INSTRUMENT, "cytopenias", "threshold"),
        citation=citation,
        evidence=evidence,
        missing=missing,
        points=low,
        points_min=low,
        points_max=high,
    )


def probability(doc: dict[str, Any], score: int) -> tuple[float, Literal["<", "=", ">"]]:
    """Point estimate from Fardet's table: linear between numeric anchors, clamped at the ends."""
    anchors = [(int(row["score"]), row["percent"]) for row in doc["probability_table"]]
    numeric = [(s, float(p)) for s, p in anchors if not isinstance(p, str)]
    first_score, first_pct = numeric[0]
    last_score, last_pct = numeric[-1]
    lowest_open = anchors[0]
    highest_open = anchors[-1]
    if score <= lowest_open[0]:
        return first_pct / 100, "<"
    if score >= highest_open[0]:
        return last_pct / 100, ">"
    if score <= first_score:
        return first_pct / 100, "="
    if score >= last_score:
        return last_pct / 100, "="
    for (s0, p0), (s1, p1) in zip(numeric, numeric[1:], strict=False):
        if s0 <= score <= s1:
            return round((p0 + (p1 - p0) * (score - s0) / (s1 - s0)) / 100, 4), "="
    raise AssertionError("unreachable: anchors cover the range")


def band_label(doc: dict[str, Any], score: int) -> str:
    for band in doc["probability_bands"]:
        if band["max"] is None or score <= int(band["max"]):
            return str(band["label"])
    raise AssertionError("unreachable: the last band is open")


def evaluate_hscore(ctx: Context) -> HScoreResult:
    doc = ctx.kb.criteria[INSTRUMENT]
    citation = doc["citation"]
    variables = doc["variables"]
    criteria: list[CriterionResult] = []
    for key, spec in variables.items():
        if key == "organomegaly":
            criteria.append(_organomegaly(ctx, spec, citation))
        elif key == "cytopenias":
            criteria.append(_cytopenias(ctx, spec, citation))
        elif "finding" in spec:
            criteria.append(_finding_points(ctx, key, spec, citation, ctx.kb.label(INSTRUMENT, key)))
        else:
            criteria.append(_band_criterion(ctx, key, spec, citation, ctx.kb.label(INSTRUMENT, key)))
    score = sum(c.points_min or 0 for c in criteria)
    score_max = sum(c.points_max or 0 for c in criteria)
    cutoff = int(doc["cutoff"]["value"])
    prob, qualifier = probability(doc, score)
    above: bool | None = True if score >= cutoff else (False if score_max < cutoff else None)
    return HScoreResult(
        score=score,
        score_min=score,
        score_max=score_max,
        probability=prob,
        probability_qualifier=qualifier,
        probability_band=band_label(doc, score),
        probability_min=probability(doc, score)[0],
        probability_max=probability(doc, score_max)[0],
        above_cutoff=above,
        cutoff=cutoff,
        criteria=tuple(criteria),
        citation=citation,
        caveat=str(doc["caveat"]["text"]),
    )


def summarize(result: HScoreResult) -> str:
    return (
        f"{result.score} (range {result.score_min}-{result.score_max}), probability "
        f"{result.probability_band} (~{result.probability:.0%}), cut-off {result.cutoff}"
    )


def details(result: HScoreResult) -> tuple[str, ...]:
    return (f"Caveat: {result.caveat}",)
