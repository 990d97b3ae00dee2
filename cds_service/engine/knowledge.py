"""The knowledge base: every mappings/ file loaded, schema-validated and indexed once.

Nothing clinical is hard-coded in the engine: codes, units, thresholds, reference limits and citations come
from here. `load_knowledge()` fails fast with DataFileError naming the file and the field.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import orjson

from cds_service.datafiles import check_thresholds, load_validated, mappings_dir
from cds_service.engine.catalog import Analyte, DrugClass, Finding, ProcedureKind
from cds_service.engine.labels import render_labels
from cds_service.engine.units import UnitConverter, UnitError, UnitSpec
from cds_service.errors import DataFileError

T = TypeVar("T")
MEMO_LIMIT = 4096  # concepts remembered per knowledge base; they come from requests, so the memo is bounded

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
SYMBOLS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
NOT_INSTRUMENTS = frozenset({"ctcae"})  # criteria/ files that are not an instrument's criteria


@dataclass(frozen=True, slots=True)
class Threshold:
    """A published cut-off, stored in its original unit and compared in the canonical unit."""

    op: str
    value: float
    unit: str
    original_value: float
    original_unit: str
    source: str

    def test(self, measured: float) -> bool:
        return OPERATORS[self.op](measured, self.value)

    def describe(self) -> str:
        return f"{SYMBOLS[self.op]} {self.original_value:g} {self.original_unit}".rstrip()


@dataclass(frozen=True, slots=True)
class CodeHit:
    analyte: str
    fasting: bool
    status: str


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    display: str
    target: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TextMatcher:
    """Case-insensitive matching of code.text / coding.display against reviewed patterns."""

    patterns: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        return any(pattern.search(text) for pattern in self.patterns)


def _matcher(patterns: list[str], literal: bool = False) -> TextMatcher:
    return TextMatcher(tuple(re.compile(re.escape(p) if literal else p, re.IGNORECASE) for p in patterns))


@dataclass(frozen=True, slots=True)
class OxygenLevel:
    """A level of oxygen support as the ASTCT 2019 CRS grade reads it (mappings/oxygen_support.yaml)."""

    name: str
    grade: int
    display: str


@dataclass(frozen=True, slots=True)
class OxygenSupport:
    """Device codes and text patterns by level, the Observation codes that carry a device, the flow limit."""

    observation_codes: frozenset[tuple[str, str]]
    levels: dict[str, OxygenLevel]
    codes: dict[tuple[str, str], str]  # (system, code) -> level name
    text: tuple[tuple[str, TextMatcher], ...]  # (level name, matcher), highest grade first
    low_flow_max: dict[str, Any]

    def level_of(self, codes: list[tuple[str, str]], text: str) -> OxygenLevel | None:
        """The highest level a device's codes or text name; None if nothing is recognised."""
        found = [self.levels[self.codes[c]] for c in codes if c in self.codes]
        found += [self.levels[name] for name, matcher in self.text if text and matcher.matches(text)]
        return max(found, key=lambda level: level.grade) if found else None


@dataclass(slots=True, eq=False)
class Knowledge:
    """All mappings, indexed for the hot path. Compared and hashed by identity (one per directory)."""

    directory: Path
    analytes: dict[str, dict[str, Any]]
    loinc_index: dict[str, CodeHit]
    analyte_text: dict[str, TextMatcher]
    units: UnitConverter
    ranges: dict[str, tuple[float | None, float | None]]
    products: dict[str, Product]
    product_rxnorm: dict[str, str]
    product_ndc: tuple[tuple[str, str], ...]
    product_names: tuple[tuple[str, str], ...]
    therapy_procedures: dict[tuple[str, str], str | None]
    drug_rxnorm: dict[str, str]
    drug_names: tuple[tuple[str, str], ...]
    drug_roles: dict[str, str]
    vasopressin_classes: frozenset[str]  # vasopressors that never count as a second agent (CRS grade 4)
    finding_codes: dict[tuple[str, str], tuple[str, ...]]
    finding_text: dict[str, TextMatcher]
    finding_display: dict[str, str]
    crs_system: str
    crs_codes: dict[str, int | None]
    crs_text: TextMatcher
    oxygen: OxygenSupport
    documented_rows: dict[
        tuple[str, str], str
    ]  # (system, code) of a site's flowsheet row -> what it documents
    procedure_codes: dict[tuple[str, str], str]
    procedure_text: dict[str, TextMatcher]
    criteria: dict[str, dict[str, Any]]
    labels: dict[str, dict[str, dict[str, str]]]  # instrument -> criterion -> {"label", "threshold"}
    ctcae: dict[str, Any]
    engine_defaults: dict[str, Any]
    citations: dict[str, dict[str, Any]]
    _thresholds: dict[tuple[Any, ...], Threshold] = field(default_factory=dict)
    _concepts: dict[tuple[str, bytes], Any] = field(default_factory=dict)

    def memoized(self, name: str, concept: Any, compute: Callable[[Knowledge, Any], T]) -> T:
        """`compute(self, concept)`, once per distinct concept (by its JSON): the same drug and product
        codings come back on every hook. A concept that is not JSON is computed every time."""
        try:
            key = (name, orjson.dumps(concept))
        except TypeError:
            return compute(self, concept)
        if key in self._concepts:
            found: T = self._concepts[key]
            return found
        if len(self._concepts) >= MEMO_LIMIT:
            self._concepts.clear()
        result = self._concepts[key] = compute(self, concept)
        return result

    def threshold(self, analyte: str, spec: dict[str, Any], source: str = "") -> Threshold:
        """Convert a threshold spec {op, value, unit} of `analyte` to canonical units (memoized: the
        criteria ask for the same cut-offs on every evaluation)."""
        key = (analyte, spec.get("op"), spec.get("value"), spec.get("unit"), spec.get("source", source))
        found = self._thresholds.get(key)
        if found is None:
            found = self._thresholds[key] = self._threshold(analyte, spec, source)
        return found

    def _threshold(self, analyte: str, spec: dict[str, Any], source: str) -> Threshold:
        unit = spec.get("unit") or self.analytes[analyte]["canonical_unit"]
        try:
            value = self.units.threshold_to_canonical(analyte, float(spec["value"]), unit)
        except UnitError as exc:
            raise DataFileError(str(self.directory), f"threshold for {analyte}", str(exc)) from exc
        return Threshold(
            op=spec["op"],
            value=value,
            unit=self.analytes[analyte]["canonical_unit"],
            original_value=float(spec["value"]),
            original_unit=unit,
            source=spec.get("source", source),
        )

    def label(self, instrument: str, criterion: str, field: str = "label") -> str:
        """A criterion's label (or threshold text), rendered from its criteria file (engine.labels)."""
        return self.labels[instrument][criterion][field]

    def display(self, analyte: str) -> str:
        return str(self.analytes[analyte]["display"])

    def first_loinc(self, analyte: str) -> str | None:
        codes = self.analytes[analyte]["codes"]
        return str(codes[0]["code"]) if codes else None

    def citation_text(self, citation_id: str) -> str:
        return str(self.citations[citation_id]["text"])


def _load(directory: Path, name: str, schema: str | None = None) -> Any:
    data = load_validated(
        directory / name, directory / "schemas" / f"{schema or Path(name).stem}.schema.json"
    )
    check_thresholds(directory / name, data)
    return data


def _instrument_criteria(directory: Path) -> dict[str, dict[str, Any]]:
    """Every instrument's criteria file, by instrument id (the registry checks that each is used)."""
    criteria: dict[str, dict[str, Any]] = {}
    for path in sorted((directory / "criteria").glob("*.yaml")):
        if path.stem in NOT_INSTRUMENTS:
            continue
        doc = _load(directory, f"criteria/{path.name}", "criteria")
        if doc["instrument"] != path.stem:
            raise DataFileError(str(path), "instrument", f"'{doc['instrument']}' is not the file's own name")
        criteria[path.stem] = doc
    return criteria


def _check_catalog(path: Path, names: set[str], catalog: type[Any]) -> None:
    known = {member.value for member in catalog}
    for name in sorted(names - known):
        raise DataFileError(str(path), name, f"not a known {catalog.__name__} name")
    for name in sorted(known - names):
        raise DataFileError(str(path), name, f"{catalog.__name__} missing from the file")


def _analyte_index(
    directory: Path, data: dict[str, Any]
) -> tuple[dict[str, CodeHit], dict[str, TextMatcher], dict[str, UnitSpec]]:
    index: dict[str, CodeHit] = {}
    text: dict[str, TextMatcher] = {}
    specs: dict[str, UnitSpec] = {}
    for name, spec in data["analytes"].items():
        for code in spec["codes"]:
            if code["code"] in index:
                raise DataFileError(
                    str(directory / "analytes.yaml"),
                    f"analytes.{name}.codes",
                    f"duplicate code {code['code']}",
                )
            index[code["code"]] = CodeHit(name, bool(code.get("fasting", False)), code["status"])
        if spec.get("text_patterns"):
            text[name] = _matcher(spec["text_patterns"])
        specs[name] = UnitSpec(
            canonical=spec["canonical_unit"],
            molar_mass_g_per_mol=spec.get("molar_mass_g_per_mol"),
            dimensionless=bool(spec.get("dimensionless", False)),
            aliases=tuple(sorted(spec.get("unit_aliases", {}).items())),
            rejected=frozenset(spec.get("reject_units", [])),
        )
    return index, text, specs


def _coded(entries: list[dict[str, Any]], default_system: str) -> list[tuple[str, str]]:
    return [(e.get("system", default_system), e["code"]) for e in entries]


def _oxygen(doc: dict[str, Any]) -> OxygenSupport:
    levels = {
        name: OxygenLevel(name, int(spec["grade"]), spec["display"]) for name, spec in doc["levels"].items()
    }
    ordered = sorted(doc["levels"].items(), key=lambda item: -int(item[1]["grade"]))
    return OxygenSupport(
        observation_codes=frozenset((c["system"], c["code"]) for c in doc["observation_codes"]),
        levels=levels,
        codes={(c["system"], c["code"]): name for name, spec in doc["levels"].items() for c in spec["codes"]},
        text=tuple((name, _matcher(spec["text_patterns"], literal=True)) for name, spec in ordered),
        low_flow_max=doc["low_flow_max"],
    )


@cache
def load_knowledge(directory: Path | None = None) -> Knowledge:
    """Load and validate every mappings/ file (cached per directory)."""
    directory = directory or mappings_dir()
    citations = _load(directory, "citations.yaml")["citations"]
    analytes_doc = _load(directory, "analytes.yaml")
    _check_catalog(directory / "analytes.yaml", set(analytes_doc["analytes"]), Analyte)
    loinc_index, analyte_text, specs = _analyte_index(directory, analytes_doc)
    ranges_doc = _load(directory, "reference_ranges.yaml")
    therapies = _load(directory, "therapies.yaml")
    meds = _load(directory, "medications.yaml")
    _check_catalog(directory / "medications.yaml", set(meds["classes"]), DrugClass)
    conditions = _load(directory, "conditions.yaml")
    _check_catalog(directory / "conditions.yaml", set(conditions["findings"]), Finding)
    procedures = _load(directory, "procedures.yaml")
    oxygen = _load(directory, "oxygen_support.yaml")
    flowsheets = _load(directory, "site_flowsheets.yaml")
    _check_catalog(directory / "procedures.yaml", set(procedures["kinds"]), ProcedureKind)
    criteria = _instrument_criteria(directory)
    ctcae = _load(directory, "criteria/ctcae.yaml", "ctcae")
    engine_defaults = _load(directory, "engine.yaml")

    finding_codes: dict[tuple[str, str], tuple[str, ...]] = {}
    for name, spec in conditions["findings"].items():
        for entry in spec["codes"]:
            key = (entry["system"], entry["code"])
            finding_codes[key] = tuple(
                dict.fromkeys((*finding_codes.get(key, ()), name, *entry.get("also", [])))
            )

    knowledge = Knowledge(
        directory=directory,
        analytes=analytes_doc["analytes"],
        loinc_index=loinc_index,
        analyte_text=analyte_text,
        units=UnitConverter(specs),
        ranges={k: (v.get("low"), v.get("high")) for k, v in ranges_doc["ranges"].items()},
        products={
            p["id"]: Product(p["id"], p["display"], p["target"], tuple(p["names"]))
            for p in therapies["products"]
        },
        product_rxnorm={c["code"]: p["id"] for p in therapies["products"] for c in p["rxnorm"]},
        product_ndc=tuple((n["prefix"], p["id"]) for p in therapies["products"] for n in p.get("ndc", [])),
        product_names=tuple((name.lower(), p["id"]) for p in therapies["products"] for name in p["names"]),
        therapy_procedures={(e["system"], e["code"]): e.get("product") for e in therapies["procedures"]},
        drug_rxnorm={c["code"]: name for name, spec in meds["classes"].items() for c in spec["rxnorm"]},
        drug_names=tuple((n.lower(), name) for name, spec in meds["classes"].items() for n in spec["names"]),
        drug_roles={name: spec["role"] for name, spec in meds["classes"].items()},
        vasopressin_classes=frozenset(n for n, spec in meds["classes"].items() if spec.get("vasopressin")),
        finding_codes=finding_codes,
        finding_text={
            name: _matcher(spec["text_patterns"], literal=True)
            for name, spec in conditions["findings"].items()
        },
        finding_display={name: spec["display"] for name, spec in conditions["findings"].items()},
        crs_system=conditions["crs"]["system"],
        crs_codes=conditions["crs"]["codes"],
        crs_text=_matcher(conditions["crs"]["text_patterns"], literal=True),
        oxygen=_oxygen(oxygen),
        documented_rows={
            (row["system"], row["code"]): kind
            for kind, rows in flowsheets["documented"].items()
            for row in rows
        },
        procedure_codes={
            key: name for name, spec in procedures["kinds"].items() for key in _coded(spec["codes"], "")
        },
        procedure_text={
            name: _matcher(spec["text_patterns"], literal=True) for name, spec in procedures["kinds"].items()
        },
        criteria=criteria,
        labels={
            name: render_labels(str(directory / "criteria" / f"{name}.yaml"), doc)
            for name, doc in {**criteria, "ctcae": ctcae}.items()
        },
        ctcae=ctcae,
        engine_defaults=engine_defaults,
        citations=citations,
    )
    _check_references(knowledge)
    return knowledge


def _check_references(kb: Knowledge) -> None:
    """Every citation id and every analyte named by a criterion must exist."""

    def walk(path: str, data: Any, trail: str) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                if key in {"source", "citation"} and isinstance(value, str) and value not in kb.citations:
                    raise DataFileError(path, f"{trail}.{key}", f"unknown citation id '{value}'")
                if key == "analyte" and value not in kb.analytes:
                    raise DataFileError(path, f"{trail}.{key}", f"unknown analyte '{value}'")
                walk(path, value, f"{trail}.{key}")
        elif isinstance(data, list):
            for i, value in enumerate(data):
                walk(path, value, f"{trail}[{i}]")

    for name, doc in kb.criteria.items():
        walk(str(kb.directory / "criteria" / f"{name}.yaml"), doc, "$")
    walk(str(kb.directory / "criteria" / "ctcae.yaml"), kb.ctcae, "$")
    for analyte, _ in kb.ranges.items():
        if analyte not in kb.analytes:
            raise DataFileError(
                str(kb.directory / "reference_ranges.yaml"), f"ranges.{analyte}", "unknown analyte"
            )
