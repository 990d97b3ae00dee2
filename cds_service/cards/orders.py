"""order-select / order-sign: lenient reading of draftOrders and the two order cards.

Real clients send non-conformant drafts (reference cds-hooks.md 4.2: Bundle without `type`, `category` as an
object, no `intent` until a drug is picked), so drafts are read as plain dicts and never model-validated.

* IL-6 blockade drafted while IEC-HS is met or possible and CRS is not active: a warning (seed 5.5). Its
  suggestion removes the IL-6 draft and adds a draft anakinra order, unless anakinra is already running or
  drafted (then it only removes the IL-6 draft and says since when anakinra runs).
* An IEC-HS-directed draft: an info card with the status, the therapy given, the seed's dose for that drug
  and the next step; a drug that is already running gets "already running since ..." (info, never a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.cards import detail
from cds_service.cards.common import (
    CardContext,
    Env,
    crs_word,
    grade_phrase,
    links,
    shell,
    summary,
    timing,
)
from cds_service.cards.course import Course, running
from cds_service.cards.dosing import body_of, dose_line, doses_for
from cds_service.cards.drafts import create_action, delete_action, medication_request, suggestion
from cds_service.cards.markdown import md
from cds_service.cards.plan import next_step
from cds_service.cards.templating import fill
from cds_service.engine.events import drug_class, medication_concept
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult
from cds_service.engine.resources import ResourceSet

REPLACEMENT = "anakinra"  # the ASTCT first-line agent offered instead of IL-6 blockade


@dataclass(frozen=True, slots=True)
class Draft:
    reference: str | None  # "MedicationRequest/<id>" when the draft has an id
    drug_class: str
    role: str


def _draft_resources(draft_orders: Any) -> ResourceSet:
    """The draft Bundle's resources: its MedicationRequests and any Medication they reference."""
    resources = ResourceSet()
    if isinstance(draft_orders, dict):
        resources.add(draft_orders, "context.draftOrders")
    return resources


def classify_drafts(kb: Knowledge, draft_orders: Any, selections: list[str] | None) -> list[Draft]:
    """The draft MedicationRequests (only the selected ones for order-select) with a known drug class."""
    drafts: list[Draft] = []
    resources = _draft_resources(draft_orders)
    for resource in resources.by_type.get("MedicationRequest", []):
        rid = resource.get("id")
        reference = f"MedicationRequest/{rid}" if isinstance(rid, str) and rid else None
        if selections is not None and reference not in selections:
            continue
        cls = drug_class(kb, medication_concept(resources, resource))
        if cls is not None:
            drafts.append(Draft(reference, cls, kb.drug_roles[cls]))
    return drafts


def il6_concern(result: EvaluationResult) -> bool:
    """IEC-HS met or possible and CRS not active."""
    status = IEC_HS.result(result.instruments).status
    return status in {"met", "possible"} and result.crs_status != "active"


def _course_text(env: Env, result: EvaluationResult, course: Course) -> str:
    return detail.course_line(env, result, course, state=False)


def _status_line(env: Env, result: EvaluationResult) -> str:
    iec = IEC_HS.result(result.instruments)
    grade = f", {grade_phrase(env, result)}" if iec.grade is not None else ""
    when = timing(env, result, short=False)
    text = f"IEC-HS {env.status(iec.status)}{grade}; {when}; {crs_word(env, result)}."
    return f"{md(text)} {env.cite([iec.citation])}"


def _replace_suggestion(
    env: Env, result: EvaluationResult, drafts: list[Draft], ctx: CardContext, *, keep_anakinra: bool
) -> dict[str, Any] | None:
    """Delete the IL-6 drafts and, unless anakinra runs or is drafted, create a draft anakinra order."""
    template = env.content.cards["il6_order"]
    drug = env.content.drug_names[drafts[0].drug_class]
    deletes = [
        delete_action(fill(template.suggestions["delete"], {"drug": drug}), d.reference)
        for d in drafts
        if d.reference is not None
    ]
    option = env.content.option(REPLACEMENT)
    body = body_of(result)
    resource = (
        None
        if keep_anakinra
        else medication_request(option, result, body, ctx, env.content, env.citation_texts(option.citations))
    )
    dose_text = "; ".join(dose_line(d, body) for d in doses_for(option, result.patient))
    if resource is None:
        key, chosen = "delete", deletes
    else:
        create = create_action(fill(template.suggestions["create"], {"dose": dose_text}), resource)
        key, chosen = ("replace" if deletes else "create"), [*deletes, create]
    if not chosen:
        return None
    return suggestion(
        fill(template.suggestions[key], {"drug": drug, "dose": dose_text}), chosen, ctx.uuid_factory()
    )


def il6_card(
    env: Env,
    result: EvaluationResult,
    drafts: list[Draft],
    ctx: CardContext,
    given: tuple[Course, ...],
    *,
    anakinra_drafted: bool,
) -> dict[str, Any]:
    """Warning: IL-6 blockade drafted for a patient meeting or approaching IEC-HS without active CRS."""
    template = env.content.cards["il6_order"]
    heads = template.headings
    drug = env.content.drug_names[drafts[0].drug_class]
    status = IEC_HS.result(result.instruments).status
    anakinra = running(given, REPLACEMENT)
    caveat = env.content.option("tocilizumab_caveat")
    happening = [
        env.statement("tocilizumab_order", drug=drug, status=env.status(status), crs=crs_word(env, result)),
        _status_line(env, result),
    ]
    evidence = [f"{md(detail.sentence(caveat.condition or ''))} {env.cite(caveat.citations)}"]
    evidence += [f"{md(text)} {env.cite(caveat.citations)}" for text in caveat.statements[:2]]
    if anakinra is not None:
        nxt = [
            env.statement("already_running", drug=anakinra.name, course=_course_text(env, result, anakinra))
        ]
        step = next_step(result, env.content, given) if status == "met" else None
        if step is not None:
            nxt += detail.next_lines(env, result, step, body_of(result))
        key = "running"
    else:
        option = env.content.option(REPLACEMENT)
        nxt = [
            env.statement("replace_with_anakinra"),
            detail.option_line(env, option, result, body_of(result)),
        ]
        key = "met" if status == "met" else "possible"
    sections = [
        detail.section(heads["happening"], happening),
        detail.section(heads["evidence"], evidence),
        detail.section(heads["next"], nxt),
    ]
    text = summary(template, key, {"drug": drug, "status": env.status(status)})
    card = shell(env, ctx, template, text, "warning", detail.assemble(env, sections))
    replace = _replace_suggestion(
        env, result, drafts, ctx, keep_anakinra=anakinra is not None or anakinra_drafted
    )
    if replace:
        card.update(selectionBehavior="any", suggestions=[replace])
    card["links"] = links(template, ctx, result)
    return card


def iec_card(
    env: Env, result: EvaluationResult, drafts: list[Draft], ctx: CardContext, given: tuple[Course, ...]
) -> dict[str, Any]:
    """Info: the current IEC-HS status, the therapy given, the seed's dose for the drafted drug, next step."""
    template = env.content.cards["iec_order"]
    heads = template.headings
    cls = drafts[0].drug_class
    drug = env.content.drug_names[cls]
    iec = IEC_HS.result(result.instruments)
    already = running(given, cls)
    values = {
        "drug": drug,
        "grade": grade_phrase(env, result),
        "timing": timing(env, result),
        "status": env.status(iec.status),
    }
    values["gap"] = env.gap(result, iec.gaps[0], "summary") if iec.gaps else env.status(iec.status)
    key = "running" if already else {"met": "met", "possible": "possible"}.get(iec.status, "other")
    body = body_of(result)
    sections = [
        detail.section(heads["happening"], [_status_line(env, result)]),
        detail.section(heads["therapy"], detail.therapy(env, result, given)),
    ]
    if already is not None:
        course = _course_text(env, result, already)
        sections.append(
            detail.section(
                heads["next"], [env.statement("already_running", drug=already.name, course=course)]
            )
        )
    else:
        options = [
            o for o in env.content.options if o.drug_class == cls and o.line in {"first", "second", "salvage"}
        ]
        options = [o for o in options if doses_for(o, result.patient)][:2]
        sections.append(
            detail.section(heads["dosing"], [detail.option_line(env, o, result, body) for o in options])
        )
    if iec.status == "met" and already is None:
        sections.append(
            detail.section(
                heads["next"], detail.next_lines(env, result, next_step(result, env.content, given), body)
            )
        )
    text = summary(template, key, values)
    card = shell(env, ctx, template, text, "info", detail.assemble(env, sections))
    card["links"] = links(template, ctx, result)
    return card
