"""The dashboard's view model: the engine result plus banner, charts, sources and the full evidence behind
the card (treatment by line, the UNVERIFIED list: cds_service.smart.evidence), ready for the template. The
SMART dashboard and the preview's evidence view render the same model with the same template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from markupsafe import Markup

from cds_service.cards.content import CardContent
from cds_service.engine.instruments.registry import IEC_HS, REGISTRY
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import CriterionResult, EvaluationResult
from cds_service.smart.appcontext import VIEWS
from cds_service.smart.charts.defs import DRUG_SYMBOLS
from cds_service.smart.charts.model import Chart
from cds_service.smart.charts.panels import build_charts
from cds_service.smart.charts.svg import render
from cds_service.smart.charts.text import Row, describe, rows
from cds_service.smart.evidence import (
    TreatmentLine,
    UnverifiedItem,
    citation_url,
    content_citations,
    known,
    treatment_lines,
    unverified_items,
)
from cds_service.smart.fhirdata import display_name

InstantSource = Literal["card", "chosen", "now", "hook"]
SECTION_ORDER = {
    "iec-hs": ("summary", "trends", "criteria", "treatment", "data", "unverified"),
    "trends": ("trends", "summary", "criteria", "treatment", "data", "unverified"),
    "criteria": ("summary", "criteria", "trends", "treatment", "data", "unverified"),
}
INSTANT_SOURCES = {
    "card": "the card's evaluation instant, from the launch context",
    "chosen": "an instant chosen on this page",
    "now": "now",
    "hook": "the hook call's evaluation instant",
}


@dataclass(frozen=True, slots=True)
class Banner:
    name: str
    gender: str
    birth_date: str
    age: str
    mrn: str


@dataclass(frozen=True, slots=True)
class ChartView:
    chart: Chart
    svg: Markup
    description: str
    rows: list[Row]


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    text: str
    url: str | None
    status: str = ""  # V / S / R / D of mappings/citations.yaml


@dataclass(frozen=True, slots=True)
class InstrumentPanel:
    """One registered instrument as the dashboard shows it (built from the registry, in its order)."""

    key: str
    title: str
    line: str
    details: tuple[str, ...]
    unverified: str | None
    citation: str
    criteria: tuple[CriterionResult, ...]
    points: bool  # the criteria carry points (a score)
    context_only: bool


def panels(kb: Knowledge, result: EvaluationResult) -> list[InstrumentPanel]:
    out = []
    for instrument in REGISTRY:
        criteria = result.instruments[instrument.id].criteria
        out.append(
            InstrumentPanel(
                key=instrument.key,
                title=instrument.title(kb),
                line=instrument.line(result.instruments),
                details=instrument.detail_lines(result.instruments),
                unverified=instrument.unverified_note(kb, result.instruments),
                citation=result.instruments[instrument.id].citation,
                criteria=criteria,
                points=any(c.points is not None for c in criteria),
                context_only=instrument.context_only,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class DashboardView:
    result: EvaluationResult
    banner: Banner
    show_banner: bool
    charts: list[ChartView]
    drugs: list[tuple[str, str]]  # (symbol, drug class) of the markers on the charts
    sources: list[Source]
    panels: list[InstrumentPanel]
    sections: tuple[str, ...]
    view: str
    at_source: InstantSource
    notices: list[str]
    fhir_user: str | None
    treatment: list[TreatmentLine]
    unverified: list[UnverifiedItem]
    data_gaps: list[str]  # what could not be read (prefetch keys, or record searches cut short)

    @property
    def at_description(self) -> str:
        return INSTANT_SOURCES[self.at_source]

    @property
    def view_label(self) -> str:
        return VIEWS.get(self.view, self.view)


def banner(patient: dict[str, Any], result: EvaluationResult) -> Banner:
    """Name, sex, date of birth, age and MRN (the identifier typed MR), as the EHR banner shows them."""
    mrn = ""
    for identifier in patient.get("identifier", []):
        codes = [c.get("code") for c in identifier.get("type", {}).get("coding", []) if isinstance(c, dict)]
        if "MR" in codes and isinstance(identifier.get("value"), str):
            mrn = identifier["value"]
            break
    age = result.patient.age_years
    return Banner(
        name=display_name(patient),
        gender=str(patient.get("gender", "unknown")),
        birth_date=str(patient.get("birthDate", "unknown")),
        age="unknown" if age is None else f"{int(age)} years",
        mrn=mrn,
    )


def all_criteria(result: EvaluationResult) -> list[CriterionResult]:
    ins = result.instruments
    return [criterion for instrument in REGISTRY for criterion in ins[instrument.id].criteria]


def sources(kb: Knowledge, result: EvaluationResult, content: CardContent) -> list[Source]:
    """Every citation the page refers to (instruments, criteria, the card content), in first-use order."""
    ins = result.instruments
    ids = [IEC_HS.result(ins).citation, IEC_HS.result(ins).grading_citation]
    ids += [ins[instrument.id].citation for instrument in REGISTRY]
    ids += [c.citation for c in all_criteria(result)]
    ids += content_citations(content)
    return [
        Source(cid, str(kb.citations[cid]["text"]), citation_url(kb, cid), str(kb.citations[cid]["status"]))
        for cid in known(kb, ids)
    ]


def build_view(
    kb: Knowledge,
    content: CardContent,
    result: EvaluationResult,
    patient: dict[str, Any],
    *,
    show_banner: bool,
    view: str | None,
    at_source: InstantSource,
    notices: list[str],
    fhir_user: str | None,
    data_gaps: list[str] | None = None,
) -> DashboardView:
    charts = []
    for chart in build_charts(kb, result):
        text = describe(chart)
        # render() escapes every text it writes, so its output is safe markup.
        charts.append(ChartView(chart, Markup(render(chart, description=text)), text, rows(chart)))
    used = dict.fromkeys(drug.drug_class for drug in result.drugs)
    chosen = view if view in SECTION_ORDER else "iec-hs"
    return DashboardView(
        result=result,
        banner=banner(patient, result),
        show_banner=show_banner,
        charts=charts,
        drugs=[(DRUG_SYMBOLS.get(c, c[:2].title()), c) for c in used],
        sources=sources(kb, result, content),
        panels=panels(kb, result),
        sections=SECTION_ORDER[chosen],
        view=chosen,
        at_source=at_source,
        notices=notices,
        fhir_user="/".join(fhir_user.rstrip("/").split("/")[-2:]) if fhir_user else None,  # Practitioner/id
        treatment=treatment_lines(content),
        unverified=unverified_items(result, content),
        data_gaps=list(data_gaps or ()),
    )
