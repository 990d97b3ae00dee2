"""ASTCT IEC-HS (Hines MR, et al. Transplant Cell Ther 2023;29:438.e1), as framed by the review's Table 1,
with a computable status kept within that framework [D] (clinical register, revised 2026-12):

* met: the required ferritin, read as the IEC-HS signal (elevated and rising again after the CRS phase),
  onset timing met or not applicable (no CRS), and at least one HLH-specific manifestation (transaminases
  > 5 x ULN/baseline, hypofibrinogenemia, hemophagocytosis) in the IEC-HS phase;
* possible: the ferritin signal with only non-specific manifestations (cytopenias and the other
  manifestations), or with HLH-specific data missing, or while CRS is active or its course unknown (then
  IEC-HS cannot be separated from CRS): a quiet card naming what would make it IEC-HS;
* not met: no ferritin signal, or the signal with every manifestation known to be absent;
* indeterminate: no ferritin in the window (or no baseline to judge it).
Elevated ferritin, fever and cytopenias cannot decide "met" on their own (the seed's section 2). Clinician
confirmation and exclusion of alternatives (Hines Table 5) are always required. Severity grading is
UNVERIFIED (reference 5.3) and reported as a minimum grade with its basis and what could not be checked.
"""

from __future__ import annotations

from cds_service.engine.context import Context
from cds_service.engine.instruments.common import any_of, finding_criterion
from cds_service.engine.instruments.iec_hs.grade import grade
from cds_service.engine.instruments.iec_hs.manifestations import cytopenias, hypofibrinogenemia, transaminases
from cds_service.engine.instruments.iec_hs.other import other_manifestations
from cds_service.engine.instruments.iec_hs.required import ferritin_required
from cds_service.engine.instruments.iec_hs.timing import onset_timing
from cds_service.engine.instruments.iec_hs.window import phase_window_start
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import CriterionResult, Evidence, Gap, IecHsResult, IecStatus


def _status(
    kb: Knowledge,
    ferritin: CriterionResult,
    timing: CriterionResult,
    specific: list[CriterionResult],
    other: list[CriterionResult],
    crs_status: str,
) -> tuple[IecStatus, tuple[Gap, ...]]:
    """The status and the gaps that keep it from being decided further (most decisive first); each gap has a
    stable code and its words from criteria/iec_hs.yaml `gaps`."""
    gaps: list[Gap] = []

    def gap(code: str, analytes: tuple[str, ...] = ()) -> Gap:
        names = " or ".join(kb.display(a) for a in analytes)
        return Gap(
            code=code, text=str(kb.criteria["iec_hs"]["gaps"][code]).format(analytes=names), analytes=analytes
        )

    if ferritin.status == "unknown" and "ferritin course" in ferritin.missing:
        gaps.append(gap("ferritin-single"))
    elif ferritin.status == "unknown":
        return "indeterminate", (
            gap("no-ferritin-baseline" if "ferritin baseline" in ferritin.missing else "no-ferritin"),
        )
    elif ferritin.status != "met":
        return "not-met", ()
    if timing.status == "unknown":
        gaps.append(gap("crs-unknown"))
    elif timing.status == "not-met":
        gaps.append(gap("crs-window" if crs_status == "none" else "crs-active"))
    specific_status = any_of([c.status for c in specific])
    if specific_status == "unknown":
        analytes = tuple(
            dict.fromkeys(m for c in specific if c.status == "unknown" for m in c.missing if m in kb.analytes)
        )
        gaps.append(gap("specific-missing", analytes) if analytes else gap("specific-not-yet"))
    elif specific_status == "not-met":
        gaps.append(gap("specific-absent"))
    if ferritin.status == "met" and specific_status == "met" and timing.status in {"met", "not-applicable"}:
        return "met", ()
    if timing.status == "not-met":  # CRS active (or may begin) and not improving: only the full picture
        full = ferritin.status == "met" and specific_status == "met"
        return ("possible" if full else "not-met"), tuple(gaps)
    if specific_status in {"met", "unknown"} or any(c.status == "met" for c in other):
        return "possible", tuple(gaps)
    return "not-met", tuple(gaps)


SUMMARIES: dict[IecStatus, str] = {
    "met": "IEC-HS criteria met",
    "possible": "IEC-HS possible",
    "not-met": "IEC-HS criteria not met",
    "indeterminate": "IEC-HS cannot be judged: data missing",
    "not-applicable": "No immune effector cell therapy on record.",
}


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
            summary=SUMMARIES["not-applicable"],
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
    signal = ferritin_required(ctx, doc["required"], citation)
    timing = onset_timing(ctx, doc["required"], citation)
    common_doc = doc["most_common"]
    specific = [
        transaminases(ctx, common_doc["transaminases"], citation, signal.phase_start),
        hypofibrinogenemia(ctx, common_doc["hypofibrinogenemia"], citation, signal.phase_start),
        finding_criterion(
            ctx,
            id="hemophagocytosis",
            label=ctx.kb.label("iec_hs", "hemophagocytosis"),
            findings=common_doc["hemophagocytosis"]["findings"],
            citation=citation,
        ),
    ]
    # Every manifestation is read in the IEC-HS phase (from the ferritin low before its rise): a CRS sign
    # before it is not one of this syndrome.
    nonspecific = [cytopenias(ctx, common_doc["cytopenias"], citation, signal.phase_start)]
    others = other_manifestations(ctx, doc, citation, phase_window_start(ctx, signal.phase_start))
    status, gaps = _status(
        ctx.kb, signal.criterion, timing, specific, nonspecific + others, ctx.crs_course.status
    )
    onset_time = signal.onset
    result_grade = grade(ctx, status, onset_time, grading)
    return IecHsResult(
        status=status,
        criteria=(attribution, signal.criterion, timing, *specific, *nonspecific, *others),
        grade=result_grade.grade,
        grade_label=result_grade.label,
        grade_basis=result_grade.basis,
        grade_missing=result_grade.missing,
        grade_is_minimum=result_grade.is_minimum,
        onset=onset_time if status in {"met", "possible"} else None,
        citation=citation,
        grading_citation=grading["citation"],
        grading_unverified=bool(grading.get("unverified", False)),
        alternatives=alternatives,
        summary=SUMMARIES[status],
        gaps=gaps,
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
