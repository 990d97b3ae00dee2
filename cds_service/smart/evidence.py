"""The full evidence behind the bedside card, for the dashboard and the preview's evidence view.

Issue 17 moved it off the card: the card says what is happening, the therapy given and the next step; the
dashboard (SMART, behind the card's link) and the evidence view (the preview page, without SMART) show the
rest from the same data:

* the review's treatment options by line, every dose verbatim for every population, each with its
  condition, statements, UNVERIFIED notes, sources and verification status (cards/treatments.yaml);
* the UNVERIFIED list: the engine's items for this evaluation (``EvaluationResult.unverified``) and those of
  the card content (treatment notes, RxNorm codes and routes with status R that draft orders carry);
* every source the card content cites, besides the instruments' and criteria's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cds_service.cards.content import CardContent, Option
from cds_service.cards.dosing import POPULATION_LABELS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult

LINE_TITLES = {
    "supportive": "Supportive care and monitoring",
    "first": "First line: anakinra early, with or without corticosteroids",
    "second": "Second line: ruxolitinib with corticosteroids and escalated anakinra",
    "salvage": "Salvage: refractory to anti-cytokine treatments and corticosteroids",
    "caution": "Caution",
}
STATUS_TAGS = {"V": "verified", "S": "from the review", "R": "UNVERIFIED", "D": "project-derived"}


@dataclass(frozen=True, slots=True)
class DoseText:
    population: str  # "" for every population
    text: str  # verbatim from the review


@dataclass(frozen=True, slots=True)
class TreatmentOption:
    id: str
    agent: str
    doses: tuple[DoseText, ...]
    condition: str | None
    statements: tuple[str, ...]
    unverified: tuple[str, ...]
    citations: tuple[str, ...]
    status: str  # V / S / R / D
    rxnorm: str | None  # "72435 (status R)" when a draft order would carry the code


@dataclass(frozen=True, slots=True)
class TreatmentLine:
    line: str
    title: str
    options: tuple[TreatmentOption, ...]


@dataclass(frozen=True, slots=True)
class UnverifiedItem:
    where: str  # "this evaluation", or the card content it belongs to
    text: str


def _option(option: Option, content: CardContent) -> TreatmentOption:
    code = content.rxnorm.get(option.rxnorm) if option.rxnorm else None
    return TreatmentOption(
        id=option.id,
        agent=option.agent,
        doses=tuple(DoseText(POPULATION_LABELS[d.population], d.text) for d in option.dosing),
        condition=option.condition,
        statements=option.statements,
        unverified=option.unverified,
        citations=option.citations,
        status=option.status,
        rxnorm=f"{code.code} (status {code.status})" if code else None,
    )


def treatment_lines(content: CardContent) -> list[TreatmentLine]:
    """Every option of cards/treatments.yaml by line, in the review's order."""
    lines = []
    for line, title in LINE_TITLES.items():
        options = tuple(_option(o, content) for o in content.options if o.line == line)
        if options:
            lines.append(TreatmentLine(line, title, options))
    return lines


def unverified_items(result: EvaluationResult, content: CardContent) -> list[UnverifiedItem]:
    """What this evaluation and the card content rest on that is UNVERIFIED, one line each."""
    items = [UnverifiedItem("this evaluation", text) for text in result.unverified]
    items.append(UnverifiedItem("treatment lines", content.statements["lines_by_grade"].text))
    for option in content.options:
        items += [UnverifiedItem(f"treatment: {option.agent}", text) for text in option.unverified]
    for option in content.options:
        code = content.rxnorm.get(option.rxnorm) if option.rxnorm else None
        if code is not None and code.status == "R":
            agent = option.order_agent or option.agent
            items.append(
                UnverifiedItem(
                    "draft orders",
                    f"RxNorm {code.code} for {agent}: verification status R (recalled, not checked against "
                    "an RxNorm release); each draft order says so in a note.",
                )
            )
    for route in content.routes.values():
        if route.get("status") == "R":
            items.append(
                UnverifiedItem(
                    "draft orders",
                    f"SNOMED CT {route['code']} ({route['display']}) as the route of draft orders: status R "
                    "(recalled, not checked against a SNOMED CT release).",
                )
            )
    return items


def content_citations(content: CardContent) -> list[str]:
    """The citation ids the card content uses (treatment options and statements), in first-use order."""
    ids: list[str] = [cid for option in content.options for cid in option.citations]
    ids += [cid for statement in content.statements.values() for cid in statement.citations]
    return list(dict.fromkeys(ids))


def citation_url(kb: Knowledge, cid: str) -> str | None:
    entry = kb.citations.get(cid) or {}
    url = entry.get("url") or (f"https://doi.org/{entry['doi']}" if entry.get("doi") else None)
    return str(url) if url else None


def known(kb: Knowledge, ids: Iterable[str]) -> list[str]:
    return [cid for cid in dict.fromkeys(ids) if cid in kb.citations]
