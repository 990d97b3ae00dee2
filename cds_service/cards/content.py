"""Card content from cards/: templates.yaml and treatments.yaml, schema-validated and cross-checked at load.

Both files are data (reviewed clinical text with citations, the project's card settings); this module turns
them into frozen, typed objects and fails fast with DataFileError (file + field) on anything malformed or
unresolvable. The cross-reference checks live in :mod:`cds_service.cards.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cds_service.cards import checks
from cds_service.datafiles import cards_dir, load_validated
from cds_service.engine.knowledge import Knowledge


@dataclass(frozen=True, slots=True)
class Amount:
    """A per-kg or per-m² dose (one value or a min-max range) the seed states, in mg, per dose or per day."""

    mg: tuple[float, ...]
    label: str
    basis: str  # dose | day
    every_hours: float | None = None


@dataclass(frozen=True, slots=True)
class OrderDose:
    """The seed's dose as structured order data: a value, or a range (low may be absent: "up to")."""

    unit: str  # mg | mg/kg | mg/m2 (UCUM)
    value: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, slots=True)
class OrderTiming:
    frequency: int
    period: float
    unit: str  # UCUM h | d | wk
    period_max: float | None = None


@dataclass(frozen=True, slots=True)
class Order:
    dose: OrderDose
    timing: OrderTiming
    route: str | None = None  # a key of `routes` in templates.yaml; None when the seed states no route


@dataclass(frozen=True, slots=True)
class Dose:
    population: str  # any | adult | pediatric | age_ge_14 | age_lt_14
    text: str  # verbatim from the seed
    per_kg: tuple[Amount, ...] = ()
    per_m2: tuple[Amount, ...] = ()
    notes: tuple[str, ...] = ()  # shown only to this population
    order: Order | None = None


@dataclass(frozen=True, slots=True)
class Option:
    """One treatment or supportive-care option with its line, dosing, condition and sources."""

    id: str
    line: str
    agent: str
    citations: tuple[str, ...]
    status: str
    order_agent: str | None = None
    drug_class: str | None = None
    rxnorm: str | None = None
    condition: str | None = None
    dosing: tuple[Dose, ...] = ()
    statements: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Statement:
    text: str
    citations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CardTemplate:
    summary: Mapping[str, str]
    headings: Mapping[str, str]
    override_reasons: tuple[tuple[str, str], ...]
    suggestions: Mapping[str, str]
    links: tuple[tuple[str, str], ...]
    smart_link: str | None


@dataclass(frozen=True, slots=True)
class GapWords:
    """The card's words for one of the engine's IEC-HS gap codes."""

    summary: str  # the decisive gap in the summary line
    detail: str  # a line under "What the service could not see"


@dataclass(frozen=True, slots=True)
class RxCode:
    code: str
    status: str  # V / S / R / D (mappings/medications.yaml)


@dataclass(frozen=True, slots=True)
class CardContent:
    """Everything the renderer needs from cards/ (plus the RxNorm codes and their status from mappings/)."""

    directory: Path
    source: Mapping[str, Any]
    override_reason_system: str
    risk_window_days: int
    running_within_hours: float
    next_line_after_hours: float
    repeat_hours: float
    repeat_reasons: frozenset[str]
    product_short_names: Mapping[str, str]
    products_not_identified: frozenset[str]
    drug_names: Mapping[str, str]
    display_units: Mapping[str, str]
    citation_short: Mapping[str, str]
    prefetch_gaps: Mapping[str, str]
    unread_analytes: tuple[str, ...]  # decisive analytes whose unreadable results a card names
    lab_recent_hours: float  # a result this recent needs no new lab draft [D]
    orderable_labs: Mapping[str, str]  # analyte -> what a result decides (status | supportive)
    lab_category: Mapping[str, str]
    medication_category: Mapping[str, str]
    routes: Mapping[str, Mapping[str, str]]
    gap_words: Mapping[str, GapWords]  # engine gap code -> words (every code the engine can name)
    labels: Mapping[str, str]
    statements: Mapping[str, Statement]
    cards: Mapping[str, CardTemplate]
    options: tuple[Option, ...]
    rxnorm: Mapping[str, RxCode]  # code -> its status

    def option(self, option_id: str) -> Option:
        return next(o for o in self.options if o.id == option_id)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def _amounts(items: list[dict[str, Any]] | None) -> tuple[Amount, ...]:
    return tuple(
        Amount(tuple(float(v) for v in i["mg"]), i["label"], i["basis"], i.get("every_hours"))
        for i in items or []
    )


def _order(raw: dict[str, Any] | None) -> Order | None:
    if raw is None:
        return None
    dose, timing = raw["dose"], raw["timing"]
    return Order(
        dose=OrderDose(dose["unit"], dose.get("value"), dose.get("low"), dose.get("high")),
        timing=OrderTiming(timing["frequency"], timing["period"], timing["unit"], timing.get("period_max")),
        route=raw["route"]["code"] if "route" in raw else None,
    )


def _option(raw: dict[str, Any]) -> Option:
    dosing = tuple(
        Dose(
            d["population"],
            d["text"],
            _amounts(d.get("per_kg")),
            _amounts(d.get("per_m2")),
            tuple(d.get("notes", [])),
            _order(d.get("order")),
        )
        for d in raw.get("dosing", [])
    )
    return Option(
        id=raw["id"],
        line=raw["line"],
        agent=raw["agent"],
        citations=tuple(raw["citations"]),
        status=raw["status"],
        order_agent=raw.get("order_agent"),
        drug_class=raw.get("drug_class"),
        rxnorm=raw.get("rxnorm"),
        condition=raw.get("condition"),
        dosing=dosing,
        statements=tuple(raw.get("statements", [])),
        unverified=tuple(raw.get("unverified", [])),
    )


def _card(raw: dict[str, Any]) -> CardTemplate:
    return CardTemplate(
        summary=_frozen(raw["summary"]),
        headings=_frozen(raw["headings"]),
        override_reasons=tuple((r["code"], r["display"]) for r in raw["override_reasons"]),
        suggestions=_frozen(raw["suggestions"]),
        links=tuple((link["label"], link["url"]) for link in raw["links"]),
        smart_link=raw.get("smart_link"),
    )


def _medications(kb: Knowledge) -> dict[str, Any]:
    directory = kb.directory
    doc = load_validated(directory / "medications.yaml", directory / "schemas" / "medications.schema.json")
    return dict(doc["classes"])


def build_content(directory: Path, kb: Knowledge) -> CardContent:
    """Load, validate and cross-check cards/ against the knowledge base `kb`."""
    templates_path = directory / "templates.yaml"
    treatments_path = directory / "treatments.yaml"
    doc = load_validated(templates_path, directory / "schemas" / "templates.schema.json")
    treatments = load_validated(treatments_path, directory / "schemas" / "treatments.schema.json")
    medications = _medications(kb)
    checks.check_templates(templates_path, doc, kb, medications)
    checks.check_treatments(treatments_path, treatments, kb, medications, doc["routes"])
    return CardContent(
        directory=directory,
        source=_frozen(doc["source"]),
        override_reason_system=doc["override_reason_system"],
        risk_window_days=int(doc["speak"]["risk_window_days"]),
        running_within_hours=float(doc["speak"]["running_within_hours"]),
        next_line_after_hours=float(doc["next_line_after_hours"]),
        repeat_hours=float(doc["repeat_alerts"]["hours"]),
        repeat_reasons=frozenset(doc["repeat_alerts"]["reasons"]),
        product_short_names=_frozen(doc["product_short_names"]),
        products_not_identified=frozenset(doc["products_not_identified"]),
        drug_names=_frozen(doc["drug_names"]),
        display_units=_frozen(doc["display_units"]),
        citation_short=_frozen(doc["citation_short"]),
        prefetch_gaps=_frozen(doc["prefetch_gaps"]),
        unread_analytes=tuple(doc["unread_analytes"]),
        lab_recent_hours=float(doc["lab_recent_hours"]),
        orderable_labs=_frozen({k: v["decides"] for k, v in doc["orderable_labs"].items()}),
        lab_category=_frozen(doc["lab_category"]),
        medication_category=_frozen(doc["medication_category"]),
        routes=_frozen({k: _frozen(v) for k, v in doc["routes"].items()}),
        gap_words=_frozen({k: GapWords(v["summary"], v["detail"]) for k, v in doc["gap_words"].items()}),
        labels=_frozen(doc["labels"]),
        statements=_frozen(
            {k: Statement(v["text"], tuple(v["citations"])) for k, v in doc["statements"].items()}
        ),
        cards=_frozen({k: _card(v) for k, v in doc["cards"].items()}),
        options=tuple(_option(raw) for raw in treatments["options"]),
        rxnorm=_frozen(
            {
                c["code"]: RxCode(c["code"], c["status"])
                for spec in medications.values()
                for c in spec["rxnorm"]
            }
        ),
    )


@cache
def load_card_content(kb: Knowledge, directory: Path | None = None) -> CardContent:
    """The validated card content for knowledge base `kb` (cached per knowledge base and directory;
    override the location with CDS_CARDS_DIR)."""
    return build_content(directory or cards_dir(), kb)
