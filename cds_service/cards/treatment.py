"""Treatment options by line (cards/treatments.yaml) as card Markdown and as draft-order suggestions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds_service.cards.common import Env
from cds_service.cards.content import CardTemplate, Option
from cds_service.cards.dosing import Body, arithmetic, doses_for, labelled, needs_bsa, needs_weight
from cds_service.cards.drafts import create_action, medication_request, suggestion
from cds_service.cards.markdown import bullets, heading, md
from cds_service.cards.rules import SECOND_LINE_AFTER, Assessment, applies
from cds_service.cards.templating import fill
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.model import EvaluationResult

LINES = ("first", "second", "salvage", "caution")
# The one suggestion marked isRecommended (used sparingly): ASTCT advises anakinra early in IEC-HS.
RECOMMENDED = "anakinra"
GROUPS = ("monitoring", "cytopenias", "coagulopathy")


def _marker(env: Env, option: Option, result: EvaluationResult, assessment: Assessment) -> str:
    if option.line == "caution":
        return ""  # a caution is not "indicated": it always stands
    if IEC_HS.result(result.instruments).status != "met":
        return env.label("if_confirmed")
    return env.label("applies_now" if applies(option, result, assessment) else "not_now")


def option_lines(env: Env, option: Option, result: EvaluationResult, body: Body, marker: str) -> list[str]:
    """One bullet for the option, with its doses, arithmetic, notes and citations as sub-bullets."""
    head = f"**{md(option.agent)}**" + (f" ({md(marker)})" if marker else "")
    if option.setting:
        head += f": {md(option.setting)}"
    subs: list[str] = []
    doses = doses_for(option, result.patient)
    for dose in doses:
        subs.append(md(labelled(dose)))
        subs.extend(md(f"{line}") for line in arithmetic(dose, body))
    if option.dosing and not doses:
        subs.append(md(env.label("no_dose")))
    subs.extend(md(text) for text in option.statements)
    subs.extend(md(text) for text in option.unverified)
    return [f"- {head} {env.cite(option.citations)}", *(f"  - {s}" for s in subs)]


def _body_notes(env: Env, options: list[Option], body: Body) -> list[str]:
    notes: list[str] = []
    if any(needs_weight(o) for o in options):
        notes.append(
            env.statement("weight", weight=f"{body.weight_kg:g}", date=body.weight_date or "date unknown")
            if body.weight_kg is not None
            else env.statement("no_weight")
        )
    if any(needs_bsa(o) for o in options):
        if body.bsa_m2 is not None and body.height_cm is not None and body.weight_kg is not None:
            notes.append(
                env.statement(
                    "bsa", bsa=f"{body.bsa_m2:g}", height=f"{body.height_cm:g}", weight=f"{body.weight_kg:g}"
                )
            )
        else:
            notes.append(env.statement("no_bsa"))
    return notes


def shown_lines(result: EvaluationResult) -> tuple[str, ...]:
    """All lines once IEC-HS is met; otherwise first line (if confirmed) and the cautions only."""
    return LINES if IEC_HS.result(result.instruments).status == "met" else ("first", "caution")


def treatment_section(
    env: Env, template: CardTemplate, result: EvaluationResult, assessment: Assessment, body: Body
) -> list[str]:
    lines = [heading(template.headings["treatment"])]
    shown: list[Option] = []
    for line in shown_lines(result):
        options = [o for o in env.content.options if o.line == line]
        if not options:
            continue
        lines += ["", f"**{md(env.label('line_' + line))}**", ""]
        for option in options:
            lines += option_lines(env, option, result, body, _marker(env, option, result, assessment))
        shown += options
    notes = _body_notes(env, shown, body)
    hours = f"{SECOND_LINE_AFTER.total_seconds() / 3600:g}"
    notes += [env.statement("second_line_rule", hours=hours), env.statement("grade_by_line")]
    return [*lines, "", *bullets(notes)]


def supportive_section(env: Env, template: CardTemplate) -> list[str]:
    lines = [heading(template.headings["supportive"])]
    for group in GROUPS:
        for option in (o for o in env.content.options if o.line == "supportive" and o.group == group):
            lines.append(f"- **{md(option.agent)}** {env.cite(option.citations)}")
            lines.extend(f"  - {md(text)}" for text in option.statements)
    return lines


def _wanted(option: Option, result: EvaluationResult, assessment: Assessment) -> bool:
    """Offer a draft order when the option applies now and its agent is not already given in this episode.

    Pulse corticosteroids are an escalation, so earlier standard-dose steroids do not suppress them.
    """
    if not option.orderable or not applies(option, result, assessment):
        return False
    return option.when == "high_grade_or_refractory" or option.drug_class not in assessment.given


def medication_suggestions(
    env: Env,
    template: CardTemplate,
    result: EvaluationResult,
    assessment: Assessment,
    body: Body,
    patient_id: str,
    uuid: Callable[[], str],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for option in env.content.options:
        doses = doses_for(option, result.patient)
        if not doses or not _wanted(option, result, assessment):
            continue
        resource = medication_request(option, doses, body, patient_id, env.content, env.citation_texts)
        agent = option.order_agent or option.agent
        line = env.label("line_" + option.line).split(" (")[0].lower()
        label = fill(template.suggestions["medication"], {"agent": agent, "line": line})
        action = create_action(f"Add a draft {agent} order ({'; '.join(d.text for d in doses)})", resource)
        out.append(suggestion(label, [action], uuid(), recommended=option.id == RECOMMENDED))
    return out
