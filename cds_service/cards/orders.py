"""order-select / order-sign: lenient reading of draftOrders and the two order cards.

Real clients send non-conformant drafts (reference cds-hooks.md 4.2: Bundle without `type`, `category` as an
object, no `intent` until a drug is picked), so drafts are read as plain dicts and never model-validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.cards.common import CardContext, Env, crs_word, grade_phrase, links, shell, summary, timing
from cds_service.cards.dosing import body_of, dose_line, doses_for
from cds_service.cards.drafts import (
    LabGap,
    create_action,
    delete_action,
    labs_to_order,
    medication_request,
    service_request,
    suggestion,
)
from cds_service.cards.markdown import bullets, heading, md
from cds_service.cards.rules import is_high_grade
from cds_service.cards.templating import fill
from cds_service.cards.treatment import option_lines
from cds_service.engine.events import drug_class
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult

REPLACEMENT = "anakinra"  # the ASTCT first-line agent offered instead of IL-6 blockade


@dataclass(frozen=True, slots=True)
class Draft:
    reference: str | None  # "MedicationRequest/<id>" when the draft has an id
    drug_class: str
    role: str


def _concept(resource: dict[str, Any]) -> Any:
    """medicationCodeableConcept, or the code of a contained Medication it references."""
    if "medicationCodeableConcept" in resource:
        return resource["medicationCodeableConcept"]
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, dict) else None
    contained = resource.get("contained")
    for item in contained if isinstance(contained, list) else []:
        if isinstance(item, dict) and isinstance(target, str) and target == f"#{item.get('id')}":
            return item.get("code")
    return None


def _medication_requests(draft_orders: Any) -> list[dict[str, Any]]:
    entries = draft_orders.get("entry") if isinstance(draft_orders, dict) else None
    resources = (
        [e.get("resource") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    )
    return [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "MedicationRequest"]


def classify_drafts(kb: Knowledge, draft_orders: Any, selections: list[str] | None) -> list[Draft]:
    """The draft MedicationRequests (only the selected ones for order-select) with a known drug class."""
    drafts: list[Draft] = []
    for resource in _medication_requests(draft_orders):
        rid = resource.get("id")
        reference = f"MedicationRequest/{rid}" if isinstance(rid, str) and rid else None
        if selections is not None and reference not in selections:
            continue
        cls = drug_class(kb, _concept(resource))
        if cls is not None:
            drafts.append(Draft(reference, cls, kb.drug_roles[cls]))
    return drafts


def il6_concern(result: EvaluationResult) -> bool:
    """IEC-HS met or approaching (indeterminate, required ferritin criterion met) and CRS not active."""
    iec = IEC_HS.result(result.instruments)
    ferritin = any(c.id == "ferritin" and c.status == "met" for c in iec.criteria)
    approaching = iec.status == "met" or (iec.status == "indeterminate" and ferritin)
    return approaching and result.crs_status != "active"


def lab_suggestion(
    env: Env, label_template: str, gaps: tuple[LabGap, ...], ctx: CardContext
) -> dict[str, Any] | None:
    """One suggestion that drafts every missing lab (each a ServiceRequest create action)."""
    if not gaps:
        return None
    actions = [
        create_action(
            f"Draft order: {gap.display} (LOINC {gap.loinc}); {gap.reason}",
            service_request(gap, ctx.patient_id, env.content),
        )
        for gap in gaps
    ]
    label = fill(label_template, {"labs": ", ".join(gap.display for gap in gaps)})
    return suggestion(label, actions, ctx.uuid_factory())


def _sources(env: Env, title: str) -> list[str]:
    return [heading(title), *env.citer.references()]


def _status_line(env: Env, result: EvaluationResult) -> str:
    iec = IEC_HS.result(result.instruments)
    grade = f", {grade_phrase(env, result)}" if iec.status == "met" else ""
    text = f"ASTCT IEC-HS: {env.label(iec.status)}{grade}; {timing(env, result, short=False)}"
    return f"{md(text + '; CRS: ' + crs_word(env, result) + '.')} {env.cite([iec.citation])}"


def _replace_suggestion(
    env: Env, result: EvaluationResult, drafts: list[Draft], ctx: CardContext, *, anakinra_drafted: bool
) -> dict[str, Any] | None:
    """Delete the IL-6 drafts and create a draft anakinra order (unless one is already drafted)."""
    template = env.content.cards["il6_order"]
    option = env.content.option(REPLACEMENT)
    body = body_of(result)
    doses = doses_for(option, result.patient)
    drug = env.content.drug_names[drafts[0].drug_class]
    resource = medication_request(option, doses, body, ctx.patient_id, env.content, env.citation_texts)
    dose_text = "; ".join(dose_line(d, body) for d in doses)
    create = create_action(fill(template.suggestions["create"], {"dose": dose_text}), resource)
    deletes = [
        delete_action(fill(template.suggestions["delete"], {"drug": drug}), d.reference)
        for d in drafts
        if d.reference is not None
    ]
    if anakinra_drafted:  # never a second anakinra order in the same ordering session
        key, chosen = "delete", deletes
    else:
        key, chosen = ("replace" if deletes else "create"), [*deletes, create]
    if not chosen:
        return None
    return suggestion(
        fill(template.suggestions[key], {"drug": drug, "dose": dose_text}), chosen, ctx.uuid_factory()
    )


def _il6_detail(env: Env, result: EvaluationResult, drug: str) -> str:
    template = env.content.cards["il6_order"]
    status = env.label(IEC_HS.result(result.instruments).status)
    caveat = env.content.option("tocilizumab_caveat")
    anakinra = env.content.option(REPLACEMENT)
    lines = [
        heading(template.headings["status"]),
        env.statement("tocilizumab_order", drug=drug, status=status, crs=crs_word(env, result)),
        "",
        _status_line(env, result),
        "",
        heading(template.headings["evidence"]),
        *bullets(f"{md(text)} {env.cite(caveat.citations)}" for text in caveat.statements),
        "",
        env.statement("replace_with_anakinra"),
        "",
        *option_lines(env, anakinra, result, body_of(result), env.label("applies_now")),
        "",
        *_sources(env, template.headings["sources"]),
    ]
    return "\n".join(lines)


def il6_card(
    env: Env, result: EvaluationResult, drafts: list[Draft], ctx: CardContext, *, anakinra_drafted: bool
) -> dict[str, Any]:
    """Warning: IL-6 blockade drafted for a patient meeting or approaching IEC-HS without active CRS."""
    template = env.content.cards["il6_order"]
    drug = env.content.drug_names[drafts[0].drug_class]
    key = "met" if IEC_HS.result(result.instruments).status == "met" else "approaching"
    detail = _il6_detail(env, result, drug)
    card = shell(env, ctx, template, summary(template, key, {"drug": drug}), "warning", detail)
    replace = _replace_suggestion(env, result, drafts, ctx, anakinra_drafted=anakinra_drafted)
    if replace:
        card.update(selectionBehavior="any", suggestions=[replace])
    card["links"] = links(template, ctx, result)
    return card


def _iec_detail(env: Env, result: EvaluationResult, classes: set[str], gaps: tuple[LabGap, ...]) -> str:
    template = env.content.cards["iec_order"]
    body = body_of(result)
    lines = [heading(template.headings["status"]), _status_line(env, result), ""]
    lines += bullets(
        md(f"Grade basis: {fact.description}") for fact in IEC_HS.result(result.instruments).grade_basis
    )
    lines += ["", heading(template.headings["dosing"])]
    for option in (o for o in env.content.options if o.drug_class in classes and o.line != "supportive"):
        lines += option_lines(env, option, result, body, env.label("line_" + option.line))
    if gaps:
        lines += ["", heading(template.headings["labs"])]
        lines += bullets(md(f"{gap.display}: {gap.reason}") for gap in gaps)
    return "\n".join([*lines, "", *_sources(env, template.headings["sources"])])


def iec_card(env: Env, result: EvaluationResult, drafts: list[Draft], ctx: CardContext) -> dict[str, Any]:
    """Info (critical at high grade): the current IEC-HS status and grade, dose ranges, missing labs."""
    template = env.content.cards["iec_order"]
    drug = env.content.drug_names[drafts[0].drug_class]
    key = {"met": "met", "indeterminate": "indeterminate"}.get(
        IEC_HS.result(result.instruments).status, "not_met"
    )
    values = {"drug": drug, "grade": grade_phrase(env, result), "timing": timing(env, result)}
    gaps = labs_to_order(result, env.content, env.kb, monitoring=True)
    detail = _iec_detail(env, result, {d.drug_class for d in drafts}, gaps)
    level = "critical" if is_high_grade(result, env.content) else "info"
    card = shell(env, ctx, template, summary(template, key, values), level, detail)
    lab = lab_suggestion(env, template.suggestions["labs"], gaps, ctx)
    if lab:
        card.update(selectionBehavior="any", suggestions=[lab])
    card["links"] = links(template, ctx, result)
    return card
