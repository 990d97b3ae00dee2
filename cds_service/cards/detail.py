"""The patient-view card detail: status, instruments side by side, IEC-HS criteria, grade, data gaps.

Every line is built from escaped text (markdown.md) and carries the citation of its source.
"""

from __future__ import annotations

from cds_service.cards.common import CardContext, Env, crs_word, grade_phrase, product_name
from cds_service.cards.content import CardTemplate
from cds_service.cards.markdown import bullets, heading, md, table
from cds_service.engine.instruments.registry import IEC_HS, REGISTRY, title_of
from cds_service.engine.model import CriterionResult, EvaluationResult, Evidence

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
    iec = IEC_HS.result(result.instruments)
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


def instruments_section(env: Env, template: CardTemplate, result: EvaluationResult) -> list[str]:
    """One row per registered instrument: its name (cited), its one-line result, UNVERIFIED if so."""
    rows = []
    for instrument in REGISTRY:
        note = instrument.unverified_note(env.kb, result.instruments)
        rows.append(
            (
                f"{md(instrument.title(env.kb))} {env.cite([result.instruments[instrument.id].citation])}",
                md(instrument.line(result.instruments)),
                md("UNVERIFIED" if note else ""),
            )
        )
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
        for c in IEC_HS.result(result.instruments).criteria
    ]
    return [
        heading(template.headings["criteria"]),
        *table(("Criterion", "Threshold", "Finding", "Status"), rows),
    ]


def grade_section(env: Env, template: CardTemplate, result: EvaluationResult) -> list[str]:
    iec = IEC_HS.result(result.instruments)
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
    return [
        md(f"No {m.display} in the window (needed by {', '.join(title_of(env.kb, n) for n in m.needed_by)}).")
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
    items.append(env.statement("alternatives", alternatives=IEC_HS.result(result.instruments).alternatives))
    return [heading(template.headings["gaps"]), *bullets(items)]
