"""Render CDS Hooks cards from an engine EvaluationResult: patient-view and order-select / order-sign.

Public API (re-exported by cds_service.cards):

* ``CardContext`` -- request facts the engine result does not carry (service id, hook, base URL, SMART launch
  URL, data gaps, uuid factory, FHIR server, patient id).
* ``render_patient_view(result, ctx, *, content, knowledge, emit_negative=False)`` -- at most one IEC-HS card.
* ``render_order_hook(result, draft_orders, selections, ctx, *, content, knowledge)`` -- IL-6 warning
  and/or IEC-HS-directed info.

Every card is checked by :func:`cds_service.cards.invariants.check_card` before it is returned, and is
deterministic for a given input apart from the uuids drawn from ``ctx.uuid_factory``.
"""

from __future__ import annotations

from typing import Any

from cds_service.cards import orders
from cds_service.cards.common import CardContext, Env, grade_phrase, links, shell, summary, timing
from cds_service.cards.content import CardContent, CardTemplate
from cds_service.cards.detail import (
    criteria_section,
    gaps_section,
    grade_section,
    instruments_section,
    status_section,
)
from cds_service.cards.dosing import body_of
from cds_service.cards.drafts import labs_to_order
from cds_service.cards.invariants import check_card
from cds_service.cards.markdown import heading
from cds_service.cards.rules import Assessment, assess
from cds_service.cards.treatment import medication_suggestions, supportive_section, treatment_section
from cds_service.engine.instruments.registry import HSCORE, IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult

__all__ = ["CardContext", "render_order_hook", "render_patient_view"]


def _summary_key(result: EvaluationResult, assessment: Assessment) -> str:
    status = IEC_HS.result(result.instruments).status
    if status == "met":
        return "met"
    if status == "possible":
        return "indeterminate_concerning"
    if status == "indeterminate":
        return "indeterminate_concerning" if assessment.concerning else "indeterminate"
    hscore = HSCORE.result(result.instruments)
    return "not_met_hscore" if hscore.score >= hscore.cutoff else "not_met"


def _summary(env: Env, template: CardTemplate, result: EvaluationResult, assessment: Assessment) -> str:
    hscore = HSCORE.result(result.instruments)
    values = {
        "grade": grade_phrase(env, result),
        "timing": timing(env, result),
        "findings": ", ".join(env.content.concerning_criteria[c] for c in assessment.concerning),
        "hscore": str(hscore.score),
        "cutoff": str(hscore.cutoff),
    }
    return summary(template, _summary_key(result, assessment), values)


def _detail(
    env: Env, template: CardTemplate, result: EvaluationResult, assessment: Assessment, ctx: CardContext
) -> str:
    sections = [
        status_section(env, template, result),
        grade_section(env, template, result),
        instruments_section(env, template, result),
        criteria_section(env, template, result),
        treatment_section(env, template, result, assessment, body_of(result)),
        supportive_section(env, template),
        gaps_section(env, template, result, ctx),
    ]
    # Sources last: the citation numbers are only complete once every section has cited.
    sections.append([heading(template.headings["sources"]), *env.citer.references()])
    return "\n\n".join("\n".join(lines) for lines in sections if lines)


def _suggestions(
    env: Env, template: CardTemplate, result: EvaluationResult, assessment: Assessment, ctx: CardContext
) -> list[dict[str, Any]]:
    out = medication_suggestions(
        env, template, result, assessment, body_of(result), ctx.patient_id, ctx.uuid_factory
    )
    met = IEC_HS.result(result.instruments).status == "met"
    gaps = labs_to_order(result, env.content, env.kb, monitoring=met)
    lab = orders.lab_suggestion(env, template.suggestions["labs"], gaps, ctx)
    return [*out, lab] if lab else out


def render_patient_view(
    result: EvaluationResult,
    ctx: CardContext,
    *,
    content: CardContent,
    knowledge: Knowledge,
    emit_negative: bool = False,
) -> list[dict[str, Any]]:
    """One IEC-HS card for a patient with IEC therapy on record; none for a negative screen unless
    `emit_negative` (then an `info` card), none without IEC therapy."""
    if not result.therapy.found:
        return []
    env = Env(content, knowledge)
    assessment = assess(result, env.content)
    if assessment.negative and not emit_negative:
        return []
    template = env.content.cards["patient_view"]
    card = shell(
        env,
        ctx,
        template,
        _summary(env, template, result, assessment),
        assessment.indicator,
        _detail(env, template, result, assessment, ctx),
    )
    suggestions = _suggestions(env, template, result, assessment, ctx)
    if suggestions:
        card.update(selectionBehavior="any", suggestions=suggestions)
    card["links"] = links(template, ctx, result)
    check_card(card)
    return [card]


def render_order_hook(
    result: EvaluationResult,
    draft_orders: dict[str, Any],
    selections: list[str] | None,
    ctx: CardContext,
    *,
    content: CardContent,
    knowledge: Knowledge,
) -> list[dict[str, Any]]:
    """Cards for order-select (`selections` given: only those drafts) and order-sign (`selections` None)."""
    if not result.therapy.found:
        return []
    kb = knowledge
    drafts = orders.classify_drafts(kb, draft_orders, selections)
    cards: list[dict[str, Any]] = []
    il6 = [d for d in drafts if d.role == "il6_directed"]
    if il6 and orders.il6_concern(result):
        # Anakinra anywhere in the session's drafts (selected or not) means no second anakinra draft.
        every = orders.classify_drafts(kb, draft_orders, None)
        drafted = any(d.drug_class == orders.REPLACEMENT for d in every)
        cards.append(orders.il6_card(Env(content, kb), result, il6, ctx, anakinra_drafted=drafted))
    directed = [d for d in drafts if d.role == "iec_hs_directed"]
    if directed:
        cards.append(orders.iec_card(Env(content, kb), result, directed, ctx))
    for index, card in enumerate(cards):
        check_card(card, f"cards[{index}]")
    return cards
