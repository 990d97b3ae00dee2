"""Card content from cards/: templates.yaml and treatments.yaml, schema-validated and cross-checked at load.

Both files are data (reviewed clinical text with citations); this module turns them into frozen, typed
objects and fails fast with DataFileError (file + field) on anything malformed or unresolvable. The
cross-reference checks live in :mod:`cds_service.cards.checks`.
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
    """A per-kg or per-m² dose (one value or a min-max range) the review states, in mg."""

    mg: tuple[float, ...]
    label: str


@dataclass(frozen=True, slots=True)
class Dose:
    population: str  # any | adult | pediatric | age_ge_14 | age_lt_14
    text: str  # verbatim from the review
    per_kg: tuple[Amount, ...] = ()
    per_m2: tuple[Amount, ...] = ()


@dataclass(frozen=True, slots=True)
class Option:
    """One treatment or supportive-care option with its line, dosing and sources."""

    id: str
    line: str
    agent: str
    when: str
    citations: tuple[str, ...]
    status: str
    group: str | None = None
    order_agent: str | None = None
    drug_class: str | None = None
    rxnorm: str | None = None
    setting: str | None = None
    dosing: tuple[Dose, ...] = ()
    statements: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    orderable: bool = False


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
class CardContent:
    """Everything the renderer needs from cards/ (plus the verified RxNorm codes of mappings/)."""

    directory: Path
    source: Mapping[str, Any]
    override_reason_system: str
    product_short_names: Mapping[str, str]
    drug_names: Mapping[str, str]
    concerning_criteria: Mapping[str, str]
    labels: Mapping[str, str]
    indicator_critical: tuple[str, ...]
    indicator_warning: tuple[str, ...]
    high_grade: int
    orderable_labs: Mapping[str, bool]  # analyte -> part of the Hines Table 4 daily monitoring
    lab_category: Mapping[str, str]
    statements: Mapping[str, Statement]
    cards: Mapping[str, CardTemplate]
    options: tuple[Option, ...]
    verified_rxnorm: frozenset[str]

    def option(self, option_id: str) -> Option:
        return next(o for o in self.options if o.id == option_id)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def _amounts(items: list[dict[str, Any]] | None) -> tuple[Amount, ...]:
    return tuple(Amount(tuple(float(v) for v in i["mg"]), i["label"]) for i in items or [])


def _option(raw: dict[str, Any]) -> Option:
    dosing = tuple(
        Dose(d["population"], d["text"], _amounts(d.get("per_kg")), _amounts(d.get("per_m2")))
        for d in raw.get("dosing", [])
    )
    return Option(
        id=raw["id"],
        line=raw["line"],
        agent=raw["agent"],
        when=raw["when"],
        citations=tuple(raw["citations"]),
        status=raw["status"],
        group=raw.get("group"),
        order_agent=raw.get("order_agent"),
        drug_class=raw.get("drug_class"),
        rxnorm=raw.get("rxnorm"),
        setting=raw.get("setting"),
        dosing=dosing,
        statements=tuple(raw.get("statements", [])),
        unverified=tuple(raw.get("unverified", [])),
        orderable=bool(raw.get("orderable", False)),
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
    templates = load_validated(templates_path, directory / "schemas" / "templates.schema.json")
    treatments = load_validated(treatments_path, directory / "schemas" / "treatments.schema.json")
    medications = _medications(kb)
    checks.check_templates(templates_path, templates, kb, medications)
    checks.check_treatments(treatments_path, treatments, kb, medications)
    indicator = templates["indicator"]
    return CardContent(
        directory=directory,
        source=_frozen(templates["source"]),
        override_reason_system=templates["override_reason_system"],
        product_short_names=_frozen(templates["product_short_names"]),
        drug_names=_frozen(templates["drug_names"]),
        concerning_criteria=_frozen(templates["concerning_criteria"]),
        labels=_frozen(templates["labels"]),
        indicator_critical=tuple(indicator["critical"]),
        indicator_warning=tuple(indicator["warning"]),
        high_grade=int(indicator["high_grade"]),
        orderable_labs=_frozen({k: bool(v.get("daily")) for k, v in templates["orderable_labs"].items()}),
        lab_category=_frozen(templates["lab_category"]),
        statements=_frozen(
            {k: Statement(v["text"], tuple(v["citations"])) for k, v in templates["statements"].items()}
        ),
        cards=_frozen({k: _card(v) for k, v in templates["cards"].items()}),
        options=tuple(_option(raw) for raw in treatments["options"]),
        verified_rxnorm=frozenset(
            c["code"] for spec in medications.values() for c in spec["rxnorm"] if c["status"] == "V"
        ),
    )


@cache
def load_card_content(kb: Knowledge, directory: Path | None = None) -> CardContent:
    """The validated card content for knowledge base `kb` (cached per knowledge base and directory;
    override the location with CDS_CARDS_DIR)."""
    return build_content(directory or cards_dir(), kb)
