"""A readable plain-text report of an EvaluationResult, for a clinician or analyst."""

from __future__ import annotations

from cds_service.engine.instruments.registry import REGISTRY
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import CriterionResult, EvaluationResult

MARK = {"met": "[x]", "not-met": "[ ]", "unknown": "[?]"}


def _criteria(lines: list[str], criteria: tuple[CriterionResult, ...]) -> None:
    for c in criteria:
        points = (
            f" ({c.points_min}-{c.points_max} pts)"
            if c.points_min is not None and c.points_min != c.points_max
            else (f" ({c.points} pts)" if c.points is not None else "")
        )
        flag = " UNVERIFIED" if c.unverified else ""
        threshold = f" [{c.threshold}]" if c.threshold else ""
        lines.append(f"  {MARK[c.status]} {c.label}{threshold}{points}{flag}")
        for e in c.evidence:
            when = f" @ {e.time.strftime('%Y-%m-%d %H:%M')}Z" if e.time else ""
            lines.append(f"        - {e.description}{when}")


def text_report(result: EvaluationResult, kb: Knowledge) -> str:
    t = result.therapy
    lines = [f"IEC-HS evaluation at {result.at.isoformat()} (window from {result.window_start.isoformat()})"]
    if t.found:
        lines.append(
            f"Therapy: {t.product}, infused {t.infusion_time.isoformat() if t.infusion_time else '?'}"
            f" -> day +{t.day_post_infusion}"
        )
    else:
        lines.append("Therapy: no immune effector cell therapy on record")
    lines.append(f"CRS: {result.crs_status}")
    for instrument in REGISTRY:
        lines += ["", f"{instrument.title(kb)}: {instrument.line(result.instruments)}"]
        if (note := instrument.unverified_note(kb, result.instruments)) is not None:
            lines.append(f"  UNVERIFIED: {note}")
        _criteria(lines, result.instruments[instrument.id].criteria)
        lines += [f"  {line}" for line in instrument.detail_lines(result.instruments)]
    if result.missing_data:
        lines += ["", "Missing data:"] + [
            f"  - {m.display} (LOINC {m.loinc or 'n/a'}), needed by {', '.join(m.needed_by)}"
            for m in result.missing_data
        ]
    if result.data_quality.issues:
        lines += ["", f"Data quality ({len(result.data_quality.issues)} issues):"]
        lines += [f"  - {issue.resource}: {issue.problem}" for issue in result.data_quality.issues]
    if result.data_quality.fallback_ranges:
        lines += [
            "",
            "ULN/LLN from the fallback table for: " + ", ".join(result.data_quality.fallback_ranges),
        ]
    return "\n".join(lines) + "\n"
