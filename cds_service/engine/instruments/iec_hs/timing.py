"""Onset timing: with resolving/resolved CRS, or worsening after initial improvement [D]."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.iec_hs.required import rapid_rise
from cds_service.engine.model import CriterionResult, Evidence
from cds_service.engine.units import scaled


def onset_timing(ctx: Context, required: dict[str, Any], citation: str) -> CriterionResult:
    """Onset with resolving/resolved CRS, or worsening after initial improvement with CRS-directed therapy."""
    label = ctx.kb.label("iec_hs", "onset")
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
    rise = rapid_rise(ferritin, float(spec["fold"]), float(spec["within_hours"]))
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
