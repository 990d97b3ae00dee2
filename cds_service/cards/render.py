"""Render CDS Hooks cards from an engine EvaluationResult: patient-view and order-select / order-sign.

Public API (re-exported by cds_service.cards):

* ``CardContext`` -- request facts the engine result does not carry (service id, hook, base URL, SMART launch
  URL, data gaps, uuid factory, FHIR server, patient id, user, encounter, acknowledged).
* ``render_patient_view(result, ctx, *, content, knowledge)`` -- at most one IEC-HS card (rules.decide says
  when it speaks).
* ``render_order_hook(result, draft_orders, selections, ctx, *, content, knowledge)`` -- IL-6 warning
  and/or an IEC-HS-directed info card.

Every card is checked by :func:`cds_service.cards.invariants.check_card` before it is returned, and is
deterministic for a given input apart from the uuids drawn from ``ctx.uuid_factory``.
"""

from __future__ import annotations

from typing import Any

from cds_service.cards import detail, orders
from cds_service.cards.common import CardContext, Env, grade_phrase, links, shell, summary, timing
from cds_service.cards.content import CardContent, CardTemplate
from cds_service.cards.course import Course, courses
from cds_service.cards.dosing import body_of
from cds_service.cards.drafts import LabGap, create_action, deciding_labs, medication_request, suggestion
from cds_service.cards.invariants import check_card
from cds_service.cards.markdown import md
from cds_service.cards.people import in_sentence
from cds_service.cards.plan import Step, next_step
from cds_service.cards.rules import Decision, decide, ferritin_signal
from cds_service.cards.templating import fill
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult

__all__ = ["CardContext", "render_order_hook", "render_patient_view"]
RECOMMENDED = "anakinra"  # the one isRecommended draft: ASTCT advises anakinra early in IEC-HS


def decisive_gap(env: Env, result: EvaluationResult, ctx: CardContext) -> str:
    """The engine's most decisive gap in the card's words, else the first data gap, else ''."""
    gaps = IEC_HS.result(result.instruments).gaps
    if gaps:
        return env.gap(result, gaps[0], "summary")
    if ctx.data_gaps:
        key = ctx.data_gaps[0]
        return env.label("gap_key_summary", what=env.content.prefetch_gaps.get(key, key).split(" (")[0])
    return ""


STATUS_LABS = {
    "ferritin": ("ferritin",),
    "hypofibrinogenemia": ("fibrinogen",),
    "transaminases": ("ast", "alt"),
}


def _status_labs(result: EvaluationResult) -> list[str]:
    """Analytes whose result would decide the undecided status: the inputs of its unknown criteria."""
    iec = IEC_HS.result(result.instruments)
    if iec.status == "indeterminate":
        return ["ferritin"]
    return [a for c in iec.criteria if c.status == "unknown" for a in STATUS_LABS.get(c.id, ())]


def _labs(env: Env, result: EvaluationResult, kind: str) -> tuple[LabGap, ...]:
    if kind == "met":
        wanted = [a for a, decides in env.content.orderable_labs.items() if decides == "supportive"]
        return deciding_labs(result, env.content, env.kb, wanted, "Hines 2023 Table 4 targets; none in 24 h")
    if kind in {"possible", "indeterminate"}:
        wanted = [a for a in _status_labs(result) if a in env.content.orderable_labs]
        return deciding_labs(result, env.content, env.kb, wanted, "would decide the IEC-HS status now")
    return ()


def _lab_suggestion(
    env: Env, template: CardTemplate, gaps: tuple[LabGap, ...], ctx: CardContext, result: EvaluationResult
) -> dict[str, Any] | None:
    if not gaps:
        return None
    from cds_service.cards.drafts import service_request

    actions = [
        create_action(
            f"Draft order: {g.display} (LOINC {g.loinc}); {g.reason}",
            service_request(g, ctx, env.content, result.at),
        )
        for g in gaps
    ]
    label = fill(template.suggestions["labs"], {"labs": ", ".join(g.display for g in gaps)})
    return suggestion(label, actions, ctx.uuid_factory())


def _medication_suggestions(
    env: Env, template: CardTemplate, result: EvaluationResult, step: Step, ctx: CardContext
) -> list[dict[str, Any]]:
    out = []
    body = body_of(result)
    for option in step.options:
        resource = medication_request(
            option, result, body, ctx, env.content, env.citation_texts(option.citations)
        )
        if resource is None:
            continue
        agent = option.order_agent or option.agent
        line = env.label("line_" + step.line).split(" (")[0]
        label = fill(template.suggestions["medication"], {"agent": agent, "line": line})
        text = resource["dosageInstruction"][0]["text"]
        action = create_action(f"Add a draft {agent} order ({text})", resource)
        out.append(suggestion(label, [action], ctx.uuid_factory(), recommended=option.id == RECOMMENDED))
    return out


def _summary(env: Env, template: CardTemplate, result: EvaluationResult, ctx: CardContext, kind: str) -> str:
    values = {
        "grade": grade_phrase(env, result),
        "timing": timing(env, result),
        "gap": decisive_gap(env, result, ctx),
    }
    if kind == "unseen":
        signal = ferritin_signal(result, env.kb)
        values["ferritin"] = env.quantity(signal.value, signal.unit) if signal else "?"
    if kind == "acknowledged":
        values["status"] = env.status(IEC_HS.result(result.instruments).status)
    return summary(template, kind, values)


def _detail(
    env: Env,
    template: CardTemplate,
    result: EvaluationResult,
    ctx: CardContext,
    kind: str,
    given: tuple[Course, ...],
    step: Step | None,
    labs: tuple[LabGap, ...],
) -> str:
    heads = template.headings
    sections: list[list[str]] = []
    if kind == "unseen":
        what = ", ".join(env.content.prefetch_gaps.get(k, k) for k in ctx.data_gaps)
        signal = ferritin_signal(result, env.kb)
        if signal is not None:
            name = env.kb.display("ferritin")
            sections.append(
                detail.section(
                    heads["happening"],
                    [
                        md(
                            f"{name} {env.quantity(signal.value, signal.unit)}"
                            f" ({signal.time.strftime('%Y-%m-%d %H:%M')})"
                        )
                    ],
                )
            )
        sections.append(detail.section(heads["next"], [env.statement("unseen_therapy", what=what)]))
        sections.append(detail.section(heads["unseen"], detail.unseen(env, result, ctx)))
        return detail.assemble(env, sections)
    sections.append(detail.section(heads["happening"], detail.happening(env, result)))
    sections.append(detail.section(heads["therapy"], detail.therapy(env, result, given)))
    body = body_of(result)
    if step is not None:
        sections.append(detail.section(heads["next"], detail.next_lines(env, result, step, body)))
    elif kind in {"possible", "indeterminate"}:
        lines = [env.statement(kind, what=decisive_gap(env, result, ctx))]
        if labs:
            names = ", ".join(in_sentence(g.display) for g in labs)
            lines.append(md(env.label("lab_decides", lab=names)))
        sections.append(detail.section(heads["next"], lines))
    sections.append(detail.section(heads["unseen"], detail.unseen(env, result, ctx)))
    return detail.assemble(env, sections)


def render_patient_view(
    result: EvaluationResult,
    ctx: CardContext,
    *,
    content: CardContent,
    knowledge: Knowledge,
) -> list[dict[str, Any]]:
    """At most one IEC-HS card: see cds_service.cards.rules for when it speaks and how loudly."""
    decision: Decision = decide(result, content, knowledge, ctx.data_gaps)
    if decision.kind is None:
        return []
    env = Env(content, knowledge)
    template = content.cards["patient_view"]
    if ctx.acknowledged and decision.kind == "met":
        text = _summary(env, template, result, ctx, "acknowledged")
        card = shell(env, ctx, template, text, "info", None)
        card["links"] = links(template, ctx, result)
        check_card(card)
        return [card]
    given = courses(result, knowledge, content)
    step = next_step(result, content, given) if decision.kind == "met" else None
    labs = _labs(env, result, decision.kind)
    text = _summary(env, template, result, ctx, decision.kind)
    card = shell(
        env,
        ctx,
        template,
        text,
        decision.indicator,
        _detail(env, template, result, ctx, decision.kind, given, step, labs),
    )
    suggestions = _medication_suggestions(env, template, result, step, ctx) if step else []
    lab = _lab_suggestion(env, template, labs, ctx, result)
    suggestions += [lab] if lab else []
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
    given = courses(result, kb, content)
    cards: list[dict[str, Any]] = []
    il6 = [d for d in drafts if d.role == "il6_directed"]
    if il6 and orders.il6_concern(result):
        every = orders.classify_drafts(kb, draft_orders, None)
        drafted = any(d.drug_class == orders.REPLACEMENT for d in every)
        cards.append(orders.il6_card(Env(content, kb), result, il6, ctx, given, anakinra_drafted=drafted))
    directed = [d for d in drafts if d.role == "iec_hs_directed"]
    if directed:
        cards.append(orders.iec_card(Env(content, kb), result, directed, ctx, given))
    for index, card in enumerate(cards):
        check_card(card, f"cards[{index}]")
    return cards
