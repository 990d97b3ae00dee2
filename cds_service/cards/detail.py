"""The patient-view card detail: status, instruments side by side, IEC-HS criteria, grade, data gaps.

Every line is built from escaped text (markdown.md) and carries the citation of its source.
"""

from __future__ import annotations

from cds_service.cards.common import CardContext, Env, crs_word, grade_phrase, product_name
from cds_service.cards.content import CardTemplate
from cds_service.cards.markdown import bullets, heading, md, table
from cds_service.engine.model import (
    CountResult,
    CriterionResult,
    EvaluationResult,
    Evidence,
    FerritinOrganResult,
)

MAX_EVIDENCE = 2  # per criterion cell: the most recent facts are what a reader checks first
MAX_ISSUES = 5


def _when(evidence: Evidence) -> str:
    return f" ({evidence.time.strftime('%Y-%m-%d %H:%M')}Z)" if evidence.time else ""


def _finding(env: Env, criterion: CriterionResult) -> str:
    facts = [e for e in criterion.evidence if e.kind != "note"] or list(criterion.evidence)
    text = "; ".join(e.description + _when(e) for e in facts[-MAX_EVIDENCE:])
    if not text and criterion.missing:
        names = [
            env.kb.display(m) if m in env.kb.analytes else m.replace("_", " ") for m in criterion.missing
        ]
        text = "no data: " + ", ".join(names)
    return md(text)


def status_section(env: Env, template: CardTemplate, result: EvaluationResult) -> list[str]:
    iec = result.instruments.iec_hs
    therapy = result.therapy
    headline = f"ASTCT IEC-HS: {env.label(iec.status)}"
    if iec.status == "met":
        headline += f", {grade_phrase(env, result)}"
    infused = therapy.infusion_time.date().isoformat() if therapy.infusion_time else "date unknown"
    day = f"Day +{therapy.day_post_infusion}" if therapy.day_post_infusion is not None else "Day unknown"
    product = product_name(env, result, short=False)
    when = f"{day} after {product} (infused {infused}); CRS: {crs_word(env, result)}."
    return [
        heading(template.headings["status"]),
        f"**{md(headline)}** {env.cite([iec.citation])}",
        "",
        md(when),
        "",
        env.statement("screen"),
    ]


def _count_row(env: Env, name: str, result: CountResult) -> tuple[str, str, str]:
    verdict = {True: "fulfilled", False: "not_fulfilled", None: "undecided"}[result.fulfilled]
    flag = " UNVERIFIED operationalisation." if result.unverified else ""
    return (
        f"{md(name)} {env.cite([result.citation])}",
        md(f"{result.met_count}/{result.total} met, {result.unknown_count} unknown"),
        md(f"needs {result.required}: {env.label(verdict)}.{flag}"),
    )


def _organ_row(env: Env, name: str, result: FerritinOrganResult) -> tuple[str, str, str]:
    verdict = {True: "fulfilled", False: "not_fulfilled", None: "undecided"}[result.fulfilled]
    mode = f" ({result.mode} mode)" if result.mode else ""
    flag = " UNVERIFIED." if result.unverified else ""
    organs = f"ferritin + {result.organ_met_count}/{result.required_organ_count} organ criteria met"
    return (
        f"{md(name + mode)} {env.cite([result.citation])}",
        md(f"{organs}, {result.organ_unknown_count} unknown"),
        md(f"{env.label(verdict)}.{flag}"),
    )


def instruments_section(env: Env, template: CardTemplate, result: EvaluationResult) -> list[str]:
    i = result.instruments
    h = i.hscore
    side = "at or above" if h.score >= h.cutoff else "below"
    grade = f", {grade_phrase(env, result)}" if i.iec_hs.status == "met" else ""
    rows = [
        (
            f"ASTCT IEC-HS {env.cite([i.iec_hs.citation])}",
            md(env.label(i.iec_hs.status) + grade),
            md("grading UNVERIFIED" if i.iec_hs.grading_unverified else ""),
        ),
        (
            f"HScore {env.cite([h.citation])}",
            md(f"{h.score} (range {h.score_min}–{h.score_max} with unknowns)"),
            md(f"probability {h.probability_band} (Fardet table); {side} the cut-off {h.cutoff}"),
        ),
        _count_row(env, "HLH-2004", i.hlh2004),
        _count_row(env, "HLH-94", i.hlh94),
        _organ_row(env, "CARTOX", i.cartox),
        _organ_row(env, "Shah 2020", i.shah),
    ]
    return [
        heading(template.headings["instruments"]),
        *table(("Instrument", "Result", "Reading"), rows),
        "",
        env.statement("caveat"),
    ]


def criteria_section(env: Env, template: CardTemplate, result: EvaluationResult) -> list[str]:
    rows = [
        (
            f"{md(c.label)} {env.cite([c.citation])}" + (" UNVERIFIED" if c.unverified else ""),
            md(c.threshold or ""),
            _finding(env, c),
            md(env.label(c.status)),
        )
        for c in result.instruments.iec_hs.criteria
    ]
    return [
        heading(template.headings["criteria"]),
        *table(("Criterion", "Threshold", "Finding", "Status"), rows),
    ]


def grade_section(env: Env, template: CardTemplate, result: EvaluationResult) -> list[str]:
    iec = result.instruments.iec_hs
    if iec.status != "met":
        return []
    line = md(grade_phrase(env, result) + (f": {iec.grade_label}" if iec.grade_label else ""))
    lines = [heading(template.headings["grade"]), f"{line} {env.cite([iec.grading_citation])}", ""]
    lines += bullets(md(f"Basis: {fact.description}") for fact in iec.grade_basis)
    lines += bullets(md(f"Could not check: {item}") for item in iec.grade_missing)
    if iec.grading_unverified:
        lines += ["", env.statement("grading_unverified")]
    return lines


def _missing_lines(env: Env, result: EvaluationResult) -> list[str]:
    names = env.content.instrument_names
    return [
        md(f"No {m.display} in the window (needed by {', '.join(names.get(n, n) for n in m.needed_by)}).")
        for m in result.missing_data
    ]


def _quality_lines(result: EvaluationResult) -> list[str]:
    quality = result.data_quality
    lines = [md(f"{issue.resource}: {issue.problem}") for issue in quality.issues[:MAX_ISSUES]]
    if len(quality.issues) > MAX_ISSUES:
        lines.append(md(f"... and {len(quality.issues) - MAX_ISSUES} more data-quality issues."))
    if quality.fallback_ranges:
        lines.append(md("ULN/LLN from the fallback table for: " + ", ".join(quality.fallback_ranges)))
    return lines


def gaps_section(env: Env, template: CardTemplate, result: EvaluationResult, ctx: CardContext) -> list[str]:
    items = [md(gap) for gap in ctx.data_gaps]
    items += _missing_lines(env, result) + _quality_lines(result)
    items += [md(f"UNVERIFIED in this evaluation: {item}") for item in result.unverified]
    items.append(env.statement("alternatives", alternatives=result.instruments.iec_hs.alternatives))
    return [heading(template.headings["gaps"]), *bullets(items)]
