"""ASTCT IEC-HS (Hines MR, et al. Transplant Cell Ther 2023;29:438.e1), as framed by the review's Table 1.

Required: ferritin > 2 x ULN or > 2 x baseline and/or rapidly rising [D: >= 2-fold within 72 h]; onset with
resolving/resolved CRS or worsening after initial improvement with CRS-directed therapy. Computable status
[D]: met when both required criteria and >= 1 "most common" manifestation are met; not met when a required
criterion is not met; otherwise indeterminate. Clinician confirmation and exclusion of alternatives (Hines
Table 5) are always required. Severity grading is UNVERIFIED (reference 5.3) and reported as a minimum grade
with the facts that support it and the facts that could not be checked.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any, Literal

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.common import any_of, finding_criterion, threshold_criterion
from cds_service.engine.instruments.iec_hs_grade import grade
from cds_service.engine.model import CriterionResult, Evidence, IecHsResult, LabValue, Status
from cds_service.engine.units import scaled

IecStatus = Literal["met", "not-met", "indeterminate", "not-applicable"]


def _window_start(ctx: Context) -> datetime:
    infusion = ctx.therapy.infusion_time
    return max(ctx.window_start, infusion) if infusion is not None else ctx.window_start


def _rapid_rise(values: list[LabValue], fold: float, hours: float) -> tuple[LabValue, LabValue] | None:
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
    start = _window_start(ctx)
    values = ctx.values("ferritin", start)
    label = "Required: ferritin > 2 x ULN or > 2 x baseline, and/or rapidly rising"
    rise = spec["rapid_rise"]
    described = (
        f"> {spec['ferritin_uln_multiple']['value']:g} x ULN or "
        f"> {spec['ferritin_baseline_multiple']['value']:g} x baseline; "
        f"rise >= {rise['fold']:g}-fold within {rise['within_hours']:g} h [D]"
    )
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
    pair = _rapid_rise(
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


def onset_timing(ctx: Context, required: dict[str, Any], citation: str) -> CriterionResult:
    """Onset with resolving/resolved CRS, or worsening after initial improvement with CRS-directed therapy."""
    label = (
        "Required: onset with resolving/resolved CRS, "
        "or worsening after initial improvement with CRS-directed therapy"
    )
    if not ctx.crs:
        note = Evidence(
            "note",
            "no cytokine release syndrome episode recorded (Condition ICD-10-CM D89.83x): timing unknown",
        )
        return CriterionResult(
            id="onset",
            label=label,
            status="unknown",
            threshold=None,
            citation=citation,
            evidence=(note,),
            missing=("CRS history",),
        )
    episode = ctx.crs[-1]
    ids = ", ".join(episode.resource_ids)
    if episode.status == "resolved":
        when = f" on {episode.abatement.date().isoformat()}" if episode.abatement else ""
        ev = Evidence(
            "finding",
            f"CRS (max grade {episode.max_grade or '?'}) resolved{when}",
            episode.resource_ids[-1],
            time=episode.abatement,
        )
        return CriterionResult(
            id="onset", label=label, status="met", threshold=None, citation=citation, evidence=(ev,)
        )
    if episode.status == "resolving":
        ev = Evidence(
            "finding",
            f"CRS resolving: grade {episode.latest_grade} after a maximum of {episode.max_grade}",
            episode.resource_ids[-1],
        )
        return CriterionResult(
            id="onset", label=label, status="met", threshold=None, citation=citation, evidence=(ev,)
        )
    return _worsening_after_improvement(ctx, required, label, citation, episode.onset, ids)


def _worsening_after_improvement(
    ctx: Context, required: dict[str, Any], label: str, citation: str, onset: datetime | None, ids: str
) -> CriterionResult:
    """[D] CRP falls to <= 50% of its peak after CRS-directed therapy, then ferritin rises >= 2-fold within
    72 h or CRP doubles from its nadir. Without CRP data this cannot be judged (unknown)."""
    active = Evidence("finding", f"CRS active ({ids})")
    start = onset or ctx.window_start
    therapy = [
        d
        for d in ctx.drugs
        if d.time >= start and (d.role == "il6_directed" or d.drug_class == "corticosteroid")
    ]
    if not therapy:
        return CriterionResult(
            id="onset",
            label=label,
            status="not-met",
            threshold=None,
            citation=citation,
            evidence=(active, Evidence("note", "CRS active and no CRS-directed therapy given yet")),
        )
    first = therapy[0]
    before = ctx.values("crp", start, first.time)
    after = ctx.values("crp", first.time)
    if not before or not after:
        return CriterionResult(
            id="onset",
            label=label,
            status="unknown",
            threshold=None,
            citation=citation,
            evidence=(
                active,
                Evidence("drug", f"CRS-directed therapy: {first.text}", first.resource_id, time=first.time),
                Evidence("note", "CRP before and after CRS-directed therapy needed to judge improvement"),
            ),
            missing=("crp",),
        )
    rule = required["worsening_after_improvement"]
    fall, rebound = float(rule["crp_fall_fraction"]), float(rule["crp_rebound_fold"])
    peak = max(before, key=lambda lab: lab.value)
    nadir = min(after, key=lambda lab: lab.value)
    if nadir.value > scaled(fall, peak.value):
        return CriterionResult(
            id="onset",
            label=label,
            status="not-met",
            threshold=None,
            citation=citation,
            evidence=(
                active,
                value_evidence(
                    ctx.kb, nadir, f"CRP did not fall to <= {fall:.0%} of its peak {peak.value:g}"
                ),
            ),
        )
    later_crp = [
        lab
        for lab in ctx.values("crp", nadir.time)
        if lab.value >= scaled(rebound, nadir.value) and lab.time > nadir.time
    ]
    ferritin = ctx.values("ferritin", nadir.time)
    spec = required["rapid_rise"]
    rise = _rapid_rise(ferritin, float(spec["fold"]), float(spec["within_hours"]))
    if later_crp or rise:
        worse = later_crp[0] if later_crp else rise[1]  # type: ignore[index]
        return CriterionResult(
            id="onset",
            label=label,
            status="met",
            threshold=None,
            citation=citation,
            evidence=(
                active,
                value_evidence(ctx.kb, nadir, "improvement after CRS-directed therapy"),
                value_evidence(ctx.kb, worse, "then worsening"),
            ),
        )
    return CriterionResult(
        id="onset",
        label=label,
        status="not-met",
        threshold=None,
        citation=citation,
        evidence=(
            active,
            value_evidence(ctx.kb, nadir, "improving after CRS-directed therapy, no later worsening"),
        ),
    )


def transaminases(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    from cds_service.engine.instruments.organ import multiple_of

    statuses: list[Status] = []
    evidence: list[Evidence] = []
    missing: list[str] = []
    start = _window_start(ctx)
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
        label="AST or ALT > 5 x ULN (baseline normal) or > 5 x baseline (abnormal)",
        status=status,
        threshold="> 5 x ULN or > 5 x baseline",
        citation=citation,
        evidence=tuple(evidence),
        missing=tuple(missing) if status == "unknown" else (),
    )


def hypofibrinogenemia(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    base = threshold_criterion(
        ctx,
        id="hypofibrinogenemia",
        label="Hypofibrinogenemia (< 150 mg/dL or < LLN)",
        analyte="fibrinogen",
        spec=spec["threshold"],
        citation=citation,
        start=_window_start(ctx),
    )
    lab = ctx.worst("fibrinogen", _window_start(ctx))
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
    start = _window_start(ctx)
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
        label="Cytopenias, new onset or worsening (Hb, platelets, ANC)",
        status=status,
        threshold=f"new < LLN, or >= {fraction:.0%} worse than reference [D]",
        citation=spec.get("source", citation),
        evidence=tuple(evidence),
        missing=tuple(missing) if status == "unknown" else (),
    )


def _above_uln(ctx: Context, id: str, label: str, analytes: list[str], citation: str) -> CriterionResult:
    statuses: list[Status] = []
    evidence: list[Evidence] = []
    start = _window_start(ctx)
    for analyte in analytes:
        lab = ctx.worst(analyte, start)
        if lab is None or lab.high is None:
            statuses.append("unknown")
            continue
        over = lab.value > lab.high
        statuses.append("met" if over else "not-met")
        evidence.append(value_evidence(ctx.kb, lab, f"{'>' if over else 'not >'} ULN {lab.high:g}"))
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


def _pulmonary(ctx: Context, spec: dict[str, Any], citation: str) -> CriterionResult:
    start = _window_start(ctx)
    label = "Pulmonary manifestations (hypoxia, O2 need, pulmonary edema/infiltrates)"
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


def renal(ctx: Context, spec: dict[str, Any]) -> CriterionResult:
    factor = float(spec["creatinine_baseline_multiple"]["value"])
    label = f"Renal insufficiency (new onset): creatinine >= {factor:g} x baseline"
    source = spec.get("source", "kdigo2012")
    lab = ctx.worst("creatinine", _window_start(ctx))
    baseline = ctx.baseline("creatinine")
    if lab is None or baseline is None:
        return CriterionResult(
            id="renal",
            label=label,
            status="unknown",
            threshold=f">= {factor:g} x baseline",
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
        threshold=f">= {factor:g} x baseline",
        citation=source,
        evidence=(value_evidence(ctx.kb, lab, f"baseline {baseline.value:g}"),),
        unverified=True,
    )


def other_manifestations(ctx: Context, doc: dict[str, Any], citation: str) -> list[CriterionResult]:
    other = doc["other"]
    start = _window_start(ctx)
    infusion = ctx.therapy.infusion_time
    fever = threshold_criterion(
        ctx,
        id="fever",
        label="Fever (new or persistent)",
        analyte="temperature",
        spec=other["fever"]["threshold"],
        citation=other["fever"]["source"],
        start=start,
        unverified=True,
    )
    tg = threshold_criterion(
        ctx,
        id="hypertriglyceridemia",
        label="Hypertriglyceridemia (fasting > 265 mg/dL)",
        analyte="triglycerides",
        spec=other["hypertriglyceridemia"]["threshold"],
        citation=citation,
        start=start,
    )
    return [
        _above_uln(ctx, "ldh", "LDH > ULN", ["ldh"], citation),
        _above_uln(
            ctx,
            "coagulation",
            "Other coagulation abnormalities (PT, aPTT or INR > ULN)",
            other["coagulation"]["analytes"],
            citation,
        ),
        _above_uln(
            ctx, "direct-bilirubin", "Direct hyperbilirubinemia (> ULN)", ["bilirubin_direct"], citation
        ),
        finding_criterion(
            ctx,
            id="splenomegaly",
            label="New-onset splenomegaly",
            findings=["splenomegaly"],
            citation=citation,
            since=infusion,
        ),
        fever,
        finding_criterion(
            ctx,
            id="neurotoxicity",
            label="Neurotoxicity (ICANS)",
            findings=["icans"],
            citation=citation,
            since=start,
        ),
        _pulmonary(ctx, other["pulmonary"], other["pulmonary"].get("source", citation)),
        renal(ctx, other["renal"]),
        tg,
    ]


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
            label="Attributable to immune effector cell therapy",
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
        label="Attributable to immune effector cell therapy",
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
            label="Hemophagocytosis in bone marrow or other tissue",
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
