"""CARTOX (Neelapu 2018) and Shah 2020: a peak-ferritin requirement plus >= 2 organ criteria.

CARTOX window (register item 16): strict = ferritin peak on days 0-5 after infusion (default); permissive =
any ferritin while CRS is active or within N days after it. Shah: ferritin > 100,000 ug/L any time after
infusion (UNVERIFIED beyond the seed review).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cds_service.engine.context import Context, compare, value_evidence
from cds_service.engine.instruments import organ
from cds_service.engine.model import (
    CriterionResult,
    Evidence,
    FerritinOrganResult,
    LabValue,
    Status,
)


def _range(ctx: Context) -> tuple[datetime, datetime]:
    start = ctx.therapy.infusion_time if ctx.therapy.infusion_time is not None else ctx.window_start
    return start, ctx.at


def _ferritin(
    ctx: Context,
    instrument: str,
    values: list[LabValue],
    window_text: str,
    unverified: bool = False,
) -> CriterionResult:
    doc = ctx.kb.criteria[instrument]
    citation = str(doc["citation"])
    threshold = ctx.kb.threshold("ferritin", dict(doc["ferritin"]), citation)
    described = f"{ctx.kb.label(instrument, 'ferritin', 'threshold')} {window_text}"
    id, label = "ferritin", ctx.kb.label(instrument, "ferritin")
    if not values:
        return CriterionResult(
            id=id,
            label=label,
            status="unknown",
            threshold=described,
            citation=citation,
            evidence=(Evidence("note", f"no ferritin result {window_text}"),),
            missing=("ferritin",),
            unverified=unverified,
        )
    peak = max(values, key=lambda lab: lab.value)
    decided = compare(threshold, peak)
    status: Status = "unknown" if decided is None else ("met" if decided else "not-met")
    evidence = value_evidence(ctx.kb, peak, "peak", threshold.value, ctx.config.boundary_flag)
    return CriterionResult(
        id=id,
        label=label,
        status=status,
        threshold=described,
        citation=citation,
        evidence=(evidence,),
        unverified=unverified,
    )


def _decide(ferritin: CriterionResult, organs: list[CriterionResult], required: int) -> bool | None:
    met = sum(o.status == "met" for o in organs)
    unknown = sum(o.status == "unknown" for o in organs)
    if ferritin.status == "not-met" or met + unknown < required:
        return False
    if ferritin.status == "met" and met >= required:
        return True
    return None


def _cartox_values(ctx: Context, mode: str, days: list[int], after_crs: int) -> tuple[list[LabValue], str]:
    infusion = ctx.therapy.infusion_time
    if infusion is None:
        return [], "(no CAR-T infusion on record)"
    if mode == "strict":
        start = datetime.combine(infusion.date(), datetime.min.time(), infusion.tzinfo) + timedelta(
            days=days[0]
        )
        end = start + timedelta(days=days[1] - days[0] + 1) - timedelta(microseconds=1)
        return ctx.values("ferritin", start, min(end, ctx.at)), ctx.kb.label("cartox", "strict_window")
    values: list[LabValue] = []
    for episode in ctx.crs:
        if episode.onset is None:
            continue
        end = (episode.abatement or ctx.at) + timedelta(days=after_crs)
        values += ctx.values("ferritin", episode.onset, min(end, ctx.at))
    return values, ctx.kb.label("cartox", "permissive_window")


def evaluate_cartox(ctx: Context) -> FerritinOrganResult:
    doc = ctx.kb.criteria["cartox"]
    citation = doc["citation"]
    mode = ctx.config.cartox_mode
    values, window_text = _cartox_values(
        ctx, mode, list(doc["strict_window_days"]), int(doc["permissive_days_after_crs"])
    )
    ferritin = _ferritin(ctx, "cartox", values, window_text)
    start, end = _range(ctx)
    organs = [
        organ.liver(ctx, start, end),
        organ.kidney(ctx, start, end),
        organ.lung(ctx, start, end),
        organ.hemophagocytosis(
            ctx, ["hemophagocytosis_marrow", "hemophagocytosis_tissue", "hemophagocytosis_other"]
        ),
    ]
    required = int(doc["required_organ_count"])
    return FerritinOrganResult(
        fulfilled=_decide(ferritin, organs, required),
        organ_met_count=sum(o.status == "met" for o in organs),
        organ_unknown_count=sum(o.status == "unknown" for o in organs),
        required_organ_count=required,
        criteria=(ferritin, *organs),
        citation=citation,
        mode=mode,
        unverified=doc.get("organ_wording_status") == "R",
    )


def evaluate_shah(ctx: Context) -> FerritinOrganResult:
    doc = ctx.kb.criteria["shah"]
    citation = doc["citation"]
    start, end = _range(ctx)
    window_text = "after infusion" if ctx.therapy.infusion_time is not None else "in the window"
    ferritin = _ferritin(ctx, "shah", ctx.values("ferritin", start, end), window_text, unverified=True)
    organs = [
        organ.liver(ctx, start, end),
        organ.kidney(ctx, start, end),
        organ.lung(ctx, start, end),
        organ.hemophagocytosis(ctx, ["hemophagocytosis_marrow"]),
    ]
    required = int(doc["required_organ_count"])
    return FerritinOrganResult(
        fulfilled=_decide(ferritin, organs, required),
        organ_met_count=sum(o.status == "met" for o in organs),
        organ_unknown_count=sum(o.status == "unknown" for o in organs),
        required_organ_count=required,
        criteria=(ferritin, *organs),
        citation=citation,
        unverified=True,
    )


VERDICT = {True: "fulfilled", False: "not fulfilled", None: "undecided"}


def summarize(result: FerritinOrganResult) -> str:
    mode = f"[{result.mode} window] " if result.mode else ""
    organs = f"{result.organ_met_count} organ criteria met, {result.organ_unknown_count} unknown"
    return f"{mode}ferritin + {organs} (needs {result.required_organ_count}) -> {VERDICT[result.fulfilled]}"


def unverified(result: FerritinOrganResult) -> bool:
    return result.unverified
