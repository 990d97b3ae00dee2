"""Onset timing: with resolving/resolved CRS, or worsening after initial improvement with CRS-directed
therapy (the seed's Table 1, a most common manifestation; how it gates the status is [D], register).

From the CRS course (engine.crs): resolved or resolving -> met; no CRS (known) -> not applicable (the seed's
Table 2 footnote: fatal HLH > 1 year after tisagenlecleucel without preceding CRS), which does not block
the diagnosis; active -> met only for worsening after improvement: a returning fever with a rising ferritin
(raw data), or [D] CRP falling to <= half its peak after CRS-directed therapy and then rising again (or
ferritin rising rapidly); otherwise not met (IEC-HS cannot be separated from active CRS); unknown -> unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.instruments.iec_hs.required import rapid_rise
from cds_service.engine.model import CriterionResult, CrsEpisode, Evidence, Status
from cds_service.engine.units import scaled

Result = Callable[..., CriterionResult]


def onset_timing(ctx: Context, required: dict[str, Any], citation: str) -> CriterionResult:
    label = ctx.kb.label("iec_hs", "onset")
    course = ctx.crs_course

    def result(status: Status, *evidence: Evidence, missing: tuple[str, ...] = ()) -> CriterionResult:
        return CriterionResult(
            id="onset",
            label=label,
            status=status,
            threshold=None,
            citation=citation,
            evidence=evidence,
            missing=missing,
        )

    if course.status == "none" and _window_open(ctx):
        text = f"{course.reason}, but CRS may still begin (CRS onset window): a rise now is read as CRS"
        return result("not-met", Evidence("note", text))
    if course.status == "none":
        return result("not-applicable", Evidence("note", f"{course.reason}: timing not applicable"))
    if course.status == "unknown":
        return result("unknown", Evidence("note", course.reason), missing=("CRS course",))
    episode = course.episodes[-1]
    said = [
        Evidence("finding", f"CRS {episode.status}: {e.description}", e.resource_id, time=e.time)
        for e in episode.evidence
    ]
    if course.status in {"resolved", "resolving"}:
        return result("met", *said)
    if course.worsening is not None:
        fever, rise = course.worsening
        return result(
            "met",
            *said,
            Evidence(
                "value",
                f"fever returned after improvement: {fever.description}",
                fever.resource_id,
                time=fever.start,
            ),
            value_evidence(ctx.kb, rise.value, f"ferritin rising again from {rise.nadir.value:g}"),
        )
    return _crp_worsening(ctx, required, result, episode, said)


def _window_open(ctx: Context) -> bool:
    """Within the CRS onset window after the latest infusion [D] (criteria/astct_crs.yaml)."""
    days = float(ctx.kb.criteria["astct_crs"]["course"]["onset_window_days"])
    return bool(ctx.infusions) and ctx.at <= ctx.infusions[-1] + timedelta(days=days)


def _crp_worsening(
    ctx: Context, required: dict[str, Any], result: Result, episode: CrsEpisode, said: list[Evidence]
) -> CriterionResult:
    """[D] CRP falls to <= `crp_fall_fraction` of its pre-treatment peak after the first CRS-directed drug,
    then CRP rises >= `crp_rebound_fold` x its nadir or ferritin rises rapidly. Without CRP: unknown."""
    start = episode.onset or ctx.window_start
    therapy = [
        d
        for d in ctx.drugs
        if d.time >= start and (d.role == "il6_directed" or d.drug_class == "corticosteroid")
    ]
    if not therapy:
        return result("not-met", *said, Evidence("note", "CRS active and no CRS-directed therapy given yet"))
    first = therapy[0]
    given = Evidence("drug", f"CRS-directed therapy: {first.text}", first.resource_id, time=first.time)
    before, after = ctx.values("crp", start, first.time), ctx.values("crp", first.time)
    if not before or not after:
        note = Evidence(
            "note", "CRS active; without CRP before and after CRS-directed therapy no improvement is shown"
        )
        return result("not-met", *said, given, note)
    rule = required["worsening_after_improvement"]
    fall, rebound = float(rule["crp_fall_fraction"]), float(rule["crp_rebound_fold"])
    peak = max(before, key=lambda lab: lab.value)
    nadir = min(after, key=lambda lab: lab.value)
    if nadir.value > scaled(fall, peak.value):
        text = f"CRP did not fall to <= {fall:.0%} of its peak {peak.value:g}: CRS active, not improving"
        return result("not-met", *said, value_evidence(ctx.kb, nadir, text))
    later = [
        lab
        for lab in ctx.values("crp", nadir.time)
        if lab.time > nadir.time and lab.value >= scaled(rebound, nadir.value)
    ]
    spec = required["rapid_rise"]
    rise = rapid_rise(ctx.values("ferritin", nadir.time), float(spec["fold"]), float(spec["within_hours"]))
    worse = later[0] if later else (rise[1] if rise else None)
    if worse is None:
        text = "improving after CRS-directed therapy, no later worsening"
        return result("not-met", *said, value_evidence(ctx.kb, nadir, text))
    improved = value_evidence(ctx.kb, nadir, "improvement after CRS-directed therapy")
    return result("met", *said, given, improved, value_evidence(ctx.kb, worse, "then worsening"))
