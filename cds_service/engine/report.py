"""A readable plain-text report of an EvaluationResult, for a clinician or analyst."""

from __future__ import annotations

from cds_service.engine.model import (
    CountResult,
    CriterionResult,
    EvaluationResult,
    FerritinOrganResult,
)

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


def _count(name: str, result: CountResult) -> str:
    verdict = {True: "fulfilled", False: "not fulfilled", None: "undecided"}[result.fulfilled]
    counts = f"{result.met_count}/{result.total} met, {result.unknown_count} unknown"
    return f"{name}: {counts} (needs {result.required}) -> {verdict}"


def _organ(name: str, result: FerritinOrganResult) -> str:
    verdict = {True: "fulfilled", False: "not fulfilled", None: "undecided"}[result.fulfilled]
    mode = f" [{result.mode}]" if result.mode else ""
    organs = f"{result.organ_met_count} organ criteria met, {result.organ_unknown_count} unknown"
    return f"{name}{mode}: ferritin + {organs} -> {verdict}"


def text_report(result: EvaluationResult) -> str:
    i = result.instruments
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
    grade = (
        f", grade {i.iec_hs.grade}{' (at least)' if i.iec_hs.grade_is_minimum else ''}"
        if i.iec_hs.grade
        else ""
    )
    lines += ["", f"ASTCT IEC-HS: {i.iec_hs.status}{grade}"]
    _criteria(lines, i.iec_hs.criteria)
    for fact in i.iec_hs.grade_basis:
        lines.append(f"  grade basis: {fact.description}")
    for item in i.iec_hs.grade_missing:
        lines.append(f"  not checked: {item}")
    h = i.hscore
    lines += [
        "",
        f"HScore: {h.score} (range {h.score_min}-{h.score_max}), probability {h.probability_band}"
        f" (~{h.probability:.0%}), cut-off {h.cutoff}",
    ]
    _criteria(lines, h.criteria)
    for name, result_ in (("HLH-2004", i.hlh2004), ("HLH-94 (UNVERIFIED operationalisation)", i.hlh94)):
        lines += ["", _count(name, result_)]
        _criteria(lines, result_.criteria)
    for name, organ in (("CARTOX", i.cartox), ("Shah 2020 (UNVERIFIED)", i.shah)):
        lines += ["", _organ(name, organ)]
        _criteria(lines, organ.criteria)
    lines += ["", f"Caveat: {h.caveat}"]
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
