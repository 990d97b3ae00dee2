"""ASTCT IEC-HS (Hines MR, et al. Transplant Cell Ther 2023;29:438.e1), as framed by the review's Table 1.

Required: ferritin > 2 x ULN or > 2 x baseline and/or rapidly rising [D: >= 2-fold within 72 h]; onset with
resolving/resolved CRS or worsening after initial improvement with CRS-directed therapy. Computable status
[D]: met when both required criteria and >= 1 "most common" manifestation are met; not met when a required
criterion is not met; otherwise indeterminate. Clinician confirmation and exclusion of alternatives (Hines
Table 5) are always required. Severity grading is UNVERIFIED (reference 5.3) and reported as a minimum grade
with the facts that support it and the facts that could not be checked.
"""

from __future__ import annotations

from typing import Literal

from cds_service.engine.context import Context
from cds_service.engine.instruments.common import finding_criterion
from cds_service.engine.instruments.iec_hs.grade import grade
from cds_service.engine.instruments.iec_hs.manifestations import cytopenias, hypofibrinogenemia, transaminases
from cds_service.engine.instruments.iec_hs.other import other_manifestations
from cds_service.engine.instruments.iec_hs.required import ferritin_required
from cds_service.engine.instruments.iec_hs.timing import onset_timing
from cds_service.engine.model import CriterionResult, Evidence, IecHsResult, Status

IecStatus = Literal["met", "not-met", "indeterminate", "not-applicable"]


def _status(ferritin: Status, onset: Status, common: list[Status]) -> IecStatus:
    if ferritin == "met" and onset == "met" and "met" in common:
        return "met"
    if ferritin == "not-met" or onset == "not-met" or all(s == "not-met" for s in common):
        return "not-met"
    return "indeterminate"


def evaluate_iec_hs(ctx: Context) -> IecHsResult:
    doc = ctx.kb.criteria["iec_hs"]
    citation = doc["citation"]
    grading = doc["grading"]
    alternatives = f"{doc['alternatives']['text']} ({ctx.kb.citation_text(doc['alternatives']['source'])})"
    if not ctx.therapy.found:
        attribution = CriterionResult(
            id="iec-therapy",
            label=ctx.kb.label("iec_hs", "iec-therapy"),
            status="not-met",
            threshold=None,
            citation=citation,
            evidence=(Evidence("note", "no CAR-T product or infusion procedure in the supplied data"),),
        )
        return IecHsResult(
            status="not-applicable",
            criteria=(attribution,),
            grade=None,
            grade_label=None,
            grade_basis=(),
            grade_missing=(),
            grade_is_minimum=False,
            onset=None,
            citation=citation,
            grading_citation=grading["citation"],
            grading_unverified=True,
            alternatives=alternatives,
            summary="No immune effector cell therapy on record.",
        )
    attribution = CriterionResult(
        id="iec-therapy",
        label=ctx.kb.label("iec_hs", "iec-therapy"),
        status="met",
        threshold=None,
        citation=citation,
        evidence=(
            Evidence(
                "drug",
                f"{ctx.therapy.product} infused",
                ctx.therapy.resource_id,
                time=ctx.therapy.infusion_time,
            ),
        ),
    )
    ferritin, onset_time = ferritin_required(ctx, doc["required"], citation)
    timing = onset_timing(ctx, doc["required"], citation)
    common_doc = doc["most_common"]
    common = [
        transaminases(ctx, common_doc["transaminases"], citation),
        hypofibrinogenemia(ctx, common_doc["hypofibrinogenemia"], citation),
        finding_criterion(
            ctx,
            id="hemophagocytosis",
            label=ctx.kb.label("iec_hs", "hemophagocytosis"),
            findings=common_doc["hemophagocytosis"]["findings"],
            citation=citation,
        ),
        cytopenias(ctx, common_doc["cytopenias"], citation),
    ]
    status = _status(ferritin.status, timing.status, [c.status for c in common])
    others = other_manifestations(ctx, doc, citation)
    result_grade = grade(ctx, status, onset_time, grading)
    summary = {
        "met": "IEC-HS criteria met",
        "not-met": "IEC-HS criteria not met",
        "indeterminate": "IEC-HS cannot be excluded: data missing",
    }[status]
    return IecHsResult(
        status=status,
        criteria=(attribution, ferritin, timing, *common, *others),
        grade=result_grade.grade,
        grade_label=result_grade.label,
        grade_basis=result_grade.basis,
        grade_missing=result_grade.missing,
        grade_is_minimum=result_grade.is_minimum,
        onset=onset_time if status != "not-met" else None,
        citation=citation,
        grading_citation=grading["citation"],
        grading_unverified=bool(grading.get("unverified", False)),
        alternatives=alternatives,
        summary=summary,
    )


def summarize(result: IecHsResult) -> str:
    grade = ""
    if result.grade:
        grade = f", grade {result.grade}{' (at least)' if result.grade_is_minimum else ''}"
    return f"{result.status}{grade}"


def details(result: IecHsResult) -> tuple[str, ...]:
    return tuple(f"grade basis: {fact.description}" for fact in result.grade_basis) + tuple(
        f"not checked: {item}" for item in result.grade_missing
    )


def unverified(result: IecHsResult) -> bool:
    return result.grading_unverified
