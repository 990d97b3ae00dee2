"""The dashboard's view model: the engine result plus banner, charts and sources, ready for the template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from markupsafe import Markup

from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import CriterionResult, EvaluationResult
from cds_service.smart.appcontext import VIEWS
from cds_service.smart.charts.defs import DRUG_SYMBOLS
from cds_service.smart.charts.model import Chart
from cds_service.smart.charts.panels import build_charts
from cds_service.smart.charts.svg import render
from cds_service.smart.charts.text import Row, describe, rows
from cds_service.smart.fhirdata import display_name

InstantSource = Literal["card", "chosen", "now"]
SECTION_ORDER = {
    "iec-hs": ("summary", "trends", "criteria", "data"),
    "trends": ("trends", "summary", "criteria", "data"),
    "criteria": ("summary", "criteria", "trends", "data"),
}
INSTANT_SOURCES = {
    "card": "the card's evaluation instant, from the launch context",
    "chosen": "an instant chosen on this page",
    "now": "now",
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


@dataclass(frozen=True, slots=True)
class DashboardView:
    result: EvaluationResult
    banner: Banner
    show_banner: bool
    charts: list[ChartView]
    drugs: list[tuple[str, str]]  # (symbol, drug class) of the markers on the charts
    sources: list[Source]
    sections: tuple[str, ...]
    view: str
    at_source: InstantSource
    notices: list[str]
    fhir_user: str | None

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
    groups = (ins.iec_hs, ins.hscore, ins.hlh2004, ins.hlh94, ins.cartox, ins.shah)
    return [criterion for group in groups for criterion in group.criteria]


def sources(kb: Knowledge, result: EvaluationResult) -> list[Source]:
    """Every citation the page refers to, in first-use order."""
    ins = result.instruments
    ids = [ins.iec_hs.citation, ins.iec_hs.grading_citation, ins.hscore.citation, ins.hlh2004.citation]
    ids += [ins.hlh94.citation, ins.cartox.citation, ins.shah.citation]
    ids += [c.citation for c in all_criteria(result)]
    out = []
    for cid in dict.fromkeys(ids):
        entry = kb.citations.get(cid)
        if entry is None:
            continue
        url = entry.get("url") or (f"https://doi.org/{entry['doi']}" if entry.get("doi") else None)
        out.append(Source(cid, str(entry["text"]), url))
    return out


def build_view(
    kb: Knowledge,
    result: EvaluationResult,
    patient: dict[str, Any],
    *,
    show_banner: bool,
    view: str | None,
    at_source: InstantSource,
    notices: list[str],
    fhir_user: str | None,
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
        sources=sources(kb, result),
        sections=SECTION_ORDER[chosen],
        view=chosen,
        at_source=at_source,
        notices=notices,
        fhir_user="/".join(fhir_user.rstrip("/").split("/")[-2:]) if fhir_user else None,  # Practitioner/id
    )
