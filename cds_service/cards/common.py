"""Shared rendering pieces: the per-card environment (content, citations, labels) and the card shell."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cds_service.cards import people
from cds_service.cards.content import CardContent, CardTemplate
from cds_service.cards.invariants import MAX_SUMMARY, CardInvariantError
from cds_service.cards.markdown import Citer, md
from cds_service.cards.templating import fill
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult, Gap


@dataclass(frozen=True, slots=True)
class CardContext:
    """What the service knows about the request that the engine result does not carry."""

    service_id: str
    hook: str
    base_url: str
    smart_launch_url: str | None
    data_gaps: tuple[str, ...]  # prefetch keys that could not be had (missing, failed or incomplete)
    uuid_factory: Callable[[], str]
    fhir_server: str | None
    patient_id: str
    user_id: str | None = None  # context.userId ("Practitioner/123"): the drafts' requester
    encounter_id: str | None = None
    acknowledged: bool = False  # the same card was overridden as "already aware" recently (repeat alerts)


@dataclass
class Env:
    """One card's rendering state: content, knowledge and the citation numbering of its detail."""

    content: CardContent
    kb: Knowledge
    citer: Citer = field(init=False)

    def __post_init__(self) -> None:
        self.citer = Citer(self.kb.citations)

    def label(self, key: str, **values: str) -> str:
        return fill(self.content.labels[key], values)

    def statement(self, key: str, **values: str) -> str:
        """A template statement, escaped, with its citation marker."""
        entry = self.content.statements[key]
        return f"{md(fill(entry.text, values))} {self.citer.cite(entry.citations)}"

    def cite(self, ids: Iterable[str]) -> str:
        return self.citer.cite(ids)

    def citation_texts(self, ids: Iterable[str]) -> str:
        return "; ".join(self.kb.citation_text(cid) for cid in ids)

    def text(self, raw: str) -> str:
        """Engine text with units and numbers for people (not yet escaped)."""
        return people.text(raw, self.content.display_units)

    def status(self, status: str) -> str:
        """The IEC-HS status in words ("not met", never the code "not-met")."""
        return self.label(f"status_{status}")

    def gap(self, result: EvaluationResult, gap: Gap, part: str) -> str:
        """The card's words for an engine gap, keyed on its code (`part`: summary | detail); not escaped."""
        words = self.content.gap_words[gap.code]
        days = max(1, round((result.at - result.window_start).total_seconds() / 86400))
        analytes = " or ".join(people.in_sentence(self.kb.display(a)) for a in gap.analytes)
        text = words.summary if part == "summary" else words.detail
        return fill(text, {"days": str(days), "analytes": analytes})

    def quantity(self, value: float, unit: str) -> str:
        return people.quantity(value, unit, self.content.display_units)

    def footer(self) -> str:
        """'Sources: [1] Fugere 2023 §5 (S); [2] ...': short names, resolved in full on the dashboard."""
        items = []
        for number, cid in enumerate(self.citer.used(), start=1):
            short = self.content.citation_short.get(cid) or cid
            items.append(f"\\[{number}\\] {md(short)} ({self.kb.citations[cid]['status']})")
        return f"{md(self.label('sources'))}: " + "; ".join(items) if items else ""


def grade_phrase(env: Env, result: EvaluationResult) -> str:
    iec = IEC_HS.result(result.instruments)
    if iec.grade is None:
        return env.label("grade_unknown")
    return env.label("grade_minimum" if iec.grade_is_minimum else "grade", grade=str(iec.grade))


def product_name(env: Env, result: EvaluationResult, *, short: bool) -> str:
    therapy = result.therapy
    if therapy.product_id in env.content.products_not_identified:
        return env.label("product_not_identified")
    names = env.content.product_short_names
    if short and therapy.product_id is not None and therapy.product_id in names:
        return names[therapy.product_id]
    return therapy.product or env.label("product_unknown")


def timing(env: Env, result: EvaluationResult, *, short: bool = True) -> str:
    product = product_name(env, result, short=short)
    day = result.therapy.day_post_infusion
    if day is None:
        return env.label("timing_no_day", product=product)
    return env.label("timing", day=str(day), product=product)


def when(env: Env, result: EvaluationResult, instant: Any) -> str:
    return people.day_time(instant, result.therapy.infusion_time)


def crs_word(env: Env, result: EvaluationResult) -> str:
    return env.label(f"crs_{result.crs_status}")


def summary(template: CardTemplate, key: str, values: dict[str, str]) -> str:
    """Fill a summary template; fall back to dropping the product name if it would be 140+ characters."""
    text = fill(template.summary[key], values)
    if len(text) > MAX_SUMMARY and "timing" in values:
        text = fill(template.summary[key], {**values, "timing": values["timing"].split(" after ")[0]})
    if len(text) > MAX_SUMMARY:
        raise CardInvariantError(f"summary '{key}' renders to {len(text)} characters")
    return text


def links(template: CardTemplate, ctx: CardContext, result: EvaluationResult) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if ctx.smart_launch_url and template.smart_link:
        context = {"patient": ctx.patient_id, "at": result.at.isoformat(), "view": "iec-hs"}
        out.append(
            {
                "label": template.smart_link,
                "url": ctx.smart_launch_url,
                "type": "smart",
                "appContext": json.dumps(context, separators=(",", ":"), sort_keys=True),
            }
        )
    out += [{"label": label, "url": url, "type": "absolute"} for label, url in template.links]
    return out


def shell(
    env: Env, ctx: CardContext, template: CardTemplate, summary_text: str, indicator: str, detail: str | None
) -> dict[str, Any]:
    """The card without suggestions: uuid, summary, indicator, detail, source, override reasons."""
    source = env.content.source
    topic = {**source["topic"], "system": fill(source["topic"]["system"], {"base_url": ctx.base_url})}
    system = fill(env.content.override_reason_system, {"base_url": ctx.base_url})
    card: dict[str, Any] = {"uuid": ctx.uuid_factory(), "summary": summary_text, "indicator": indicator}
    if detail:
        card["detail"] = detail
    card["source"] = {"label": source["label"], "url": source["url"], "topic": topic}
    card["overrideReasons"] = [
        {"system": system, "code": code, "display": display} for code, display in template.override_reasons
    ]
    return card
