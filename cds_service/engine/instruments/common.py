"""Criterion builders shared by the instruments: thresholds, findings, lineages, bands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.engine.context import Context, compare, value_evidence
from cds_service.engine.model import CriterionResult, Evidence, LabValue, Status


def threshold_criterion(
    ctx: Context,
    *,
    id: str,
    label: str,
    analyte: str,
    spec: dict[str, Any],
    citation: str,
    start: datetime | None = None,
    end: datetime | None = None,
    note: str = "",
    unverified: bool = False,
) -> CriterionResult:
    """Worst value of `analyte` in [start, end] (default window) against one cut-off."""
    threshold = ctx.kb.threshold(analyte, spec, citation)
    lab = ctx.worst(analyte, start, end)
    described = f"{ctx.kb.display(analyte)} {threshold.describe()}"
    if lab is None:
        return CriterionResult(
            id=id,
            label=label,
            status="unknown",
            threshold=described,
            citation=threshold.source or citation,
            evidence=(Evidence("note", f"no {ctx.kb.display(analyte)} result in the window"),),
            missing=(analyte,),
            unverified=unverified,
        )
    decided = compare(threshold, lab)
    status: Status = "unknown" if decided is None else ("met" if decided else "not-met")
    evidence = value_evidence(ctx.kb, lab, note, threshold.value, ctx.config.boundary_flag)
    return CriterionResult(
        id=id,
        label=label,
        status=status,
        threshold=described,
        citation=threshold.source or citation,
        evidence=(evidence,),
        unverified=unverified,
    )


def finding_criterion(
    ctx: Context,
    *,
    id: str,
    label: str,
    findings: Sequence[str],
    citation: str,
    unverified: bool = False,
    since: datetime | None = None,
) -> CriterionResult:
    """Met if any finding is present (optionally with onset after `since`); not met only if all refuted."""
    records = [ctx.finding(name) for name in findings]
    present = [
        r for r in records if r.state == "present" and (since is None or r.onset is None or r.onset >= since)
    ]
    evidence = tuple(
        Evidence(
            "finding",
            f"{ctx.kb.finding_display[r.finding]}: recorded",
            resource_id=r.resource_id,
            time=r.onset,
        )
        for r in present
    )
    if present:
        return CriterionResult(
            id=id,
            label=label,
            status="met",
            threshold=None,
            citation=citation,
            evidence=evidence,
            unverified=unverified,
        )
    if records and all(r.state == "absent" for r in records):
        refuted = tuple(
            Evidence("finding", f"{ctx.kb.finding_display[r.finding]}: refuted", resource_id=r.resource_id)
            for r in records
        )
        return CriterionResult(
            id=id,
            label=label,
            status="not-met",
            threshold=None,
            citation=citation,
            evidence=refuted,
            unverified=unverified,
        )
    note = Evidence("note", "not recorded in the supplied Conditions (unknown, not assumed absent)")
    return CriterionResult(
        id=id,
        label=label,
        status="unknown",
        threshold=None,
        citation=citation,
        evidence=(note,),
        missing=tuple(findings),
        unverified=unverified,
    )


@dataclass(frozen=True, slots=True)
class LineageStatus:
    analyte: str
    status: Status
    evidence: Evidence | None


def lineages(
    ctx: Context,
    specs: dict[str, dict[str, Any]],
    citation: str,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[LineageStatus]:
    """Each cytopenia lineage against its cut-off (worst value in the window)."""
    found: list[LineageStatus] = []
    for analyte, spec in specs.items():
        spec = (overrides or {}).get(analyte, spec)
        threshold = ctx.kb.threshold(analyte, spec, citation)
        lab = ctx.worst(analyte)
        if lab is None:
            found.append(LineageStatus(analyte, "unknown", None))
            continue
        decided = compare(threshold, lab)
        status: Status = "unknown" if decided is None else ("met" if decided else "not-met")
        note = f"cut-off {threshold.describe()}"
        found.append(
            LineageStatus(
                analyte, status, value_evidence(ctx.kb, lab, note, threshold.value, ctx.config.boundary_flag)
            )
        )
    return found


def count_status(met: int, unknown: int, required: int) -> Status:
    if met >= required:
        return "met"
    if met + unknown < required:
        return "not-met"
    return "unknown"


def any_of(results: Sequence[Status]) -> Status:
    """OR over statuses: met if any met; not met only if all known not met."""
    if "met" in results:
        return "met"
    if "unknown" in results or not results:
        return "unknown"
    return "not-met"


def band_points(
    ctx: Context, analyte: str, bands: list[dict[str, Any]], citation: str, lab: LabValue
) -> tuple[int, int, list[str]]:
    """(min points, max points, matching band descriptions) for one value; censored values may span bands."""
    candidates: list[tuple[int, str]] = []
    for band in bands:
        decisions = []
        parts = []
        for bound in (band.get("lower"), band.get("upper")):
            if bound:
                threshold = ctx.kb.threshold(analyte, bound, citation)
                decisions.append(compare(threshold, lab))
                parts.append(threshold.describe())
        if False not in decisions:
            candidates.append((int(band["points"]), " and ".join(parts)))
    points = [p for p, _ in candidates] or [0]
    return min(points), max(points), [d for _, d in candidates]


def nearest_threshold(ctx: Context, analyte: str, bands: list[dict[str, Any]], lab: LabValue) -> float | None:
    """The band edge closest to the value (for the boundary flag)."""
    edges = [
        ctx.kb.threshold(analyte, b, "").value
        for band in bands
        for b in (band.get("lower"), band.get("upper"))
        if b
    ]
    return min(edges, key=lambda e: abs(e - lab.value)) if edges else None


def describe_bands(ctx: Context, analyte: str, bands: list[dict[str, Any]], citation: str) -> str:
    """Human-readable band table, e.g. '< 38.4 Cel: 0; ≥ 38.4 Cel and ≤ 39.4 Cel: 33; > 39.4 Cel: 49'."""
    rows = []
    for band in bands:
        parts = [
            ctx.kb.threshold(analyte, b, citation).describe()
            for b in (band.get("lower"), band.get("upper"))
            if b
        ]
        rows.append(f"{' and '.join(parts)}: {band['points']}")
    return "; ".join(rows)
