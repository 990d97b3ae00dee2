"""Cross-reference checks for cards/ data (after schema validation): every name must resolve.

Citations against mappings/citations.yaml, drug classes and RxNorm codes against mappings/medications.yaml,
analytes and products against mappings/, rule and template names against :mod:`cds_service.cards.vocab`,
placeholders against the allowed set of each field, and every per-kg / per-m² number against the verbatim
dose text it annotates (so arithmetic can never use a number the review did not print).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cds_service.cards import vocab
from cds_service.cards.templating import TemplateError, placeholders
from cds_service.engine.knowledge import Knowledge
from cds_service.errors import DataFileError


def _fail(path: Path, field: str, problem: str) -> DataFileError:
    return DataFileError(str(path), field, problem)


def _known(path: Path, field: str, names: Iterable[str], allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise _fail(path, field, f"unknown {what}: {', '.join(unknown)}")


def _placeholders(path: Path, field: str, text: str, allowed: frozenset[str]) -> None:
    try:
        names = placeholders(text)
    except TemplateError as exc:
        raise _fail(path, field, str(exc)) from exc
    _known(path, field, names, allowed, "placeholder")


def amount_text(mg: tuple[float, ...]) -> str:
    """How the review prints a dose number or range: 10, 1–2, 50–100 (en dash)."""
    return "–".join(f"{value:g}" for value in mg)


def check_templates(path: Path, doc: dict[str, Any], kb: Knowledge, medications: dict[str, Any]) -> None:
    _placeholders(path, "$.source.topic.system", doc["source"]["topic"]["system"], vocab.URL_PLACEHOLDERS)
    _placeholders(path, "$.override_reason_system", doc["override_reason_system"], vocab.URL_PLACEHOLDERS)
    _known(path, "$.product_short_names", doc["product_short_names"], kb.products, "product id")
    _known(path, "$.drug_names", doc["drug_names"], medications, "drug class")
    iec_criteria = {"ferritin", *kb.criteria["iec_hs"]["most_common"]}
    _known(path, "$.concerning_criteria", doc["concerning_criteria"], iec_criteria, "IEC-HS criterion")
    for level in ("critical", "warning"):
        _known(path, f"$.indicator.{level}", doc["indicator"][level], vocab.INDICATOR_RULES, "indicator rule")
    _check_labs(path, doc["orderable_labs"], kb)
    _check_labels(path, doc["labels"])
    _check_statements(path, doc["statements"], kb)
    for card, spec in vocab.CARD_KEYS.items():
        _check_card(path, card, doc["cards"][card], spec)


def _check_labs(path: Path, labs: dict[str, Any], kb: Knowledge) -> None:
    _known(path, "$.orderable_labs", labs, kb.analytes, "analyte")
    for analyte in labs:
        if kb.first_loinc(analyte) is None:
            raise _fail(path, f"$.orderable_labs.{analyte}", "no LOINC code in mappings/analytes.yaml")


def _check_labels(path: Path, labels: dict[str, str]) -> None:
    missing = sorted(set(vocab.LABELS) - set(labels))
    if missing:
        raise _fail(path, "$.labels", f"missing: {', '.join(missing)}")
    _known(path, "$.labels", labels, vocab.LABELS, "label")
    for key, text in labels.items():
        _placeholders(path, f"$.labels.{key}", text, vocab.LABELS[key])


def _check_statements(path: Path, statements: dict[str, Any], kb: Knowledge) -> None:
    missing = sorted(set(vocab.STATEMENTS) - set(statements))
    if missing:
        raise _fail(path, "$.statements", f"missing: {', '.join(missing)}")
    _known(path, "$.statements", statements, vocab.STATEMENTS, "statement")
    for key, statement in statements.items():
        field = f"$.statements.{key}"
        _placeholders(path, f"{field}.text", statement["text"], vocab.STATEMENTS[key])
        _known(path, f"{field}.citations", statement["citations"], kb.citations, "citation id")


def _check_card(path: Path, card: str, doc: dict[str, Any], spec: dict[str, frozenset[str]]) -> None:
    allowed = {"summary": vocab.SUMMARY_PLACEHOLDERS, "suggestions": vocab.SUGGESTION_PLACEHOLDERS}
    for section, keys in spec.items():
        field = f"$.cards.{card}.{section}"
        missing = sorted(keys - set(doc[section]))
        if missing:
            raise _fail(path, field, f"missing: {', '.join(missing)}")
        _known(path, field, doc[section], keys, "key")
        for key, text in doc[section].items():
            _placeholders(path, f"{field}.{key}", text, allowed.get(section, frozenset()))
    for index, reason in enumerate(doc["override_reasons"]):
        _placeholders(path, f"$.cards.{card}.override_reasons[{index}]", reason["display"], frozenset())


def check_treatments(path: Path, doc: dict[str, Any], kb: Knowledge, medications: dict[str, Any]) -> None:
    seen: set[str] = set()
    for index, option in enumerate(doc["options"]):
        field = f"$.options[{index}]"
        if option["id"] in seen:
            raise _fail(path, f"{field}.id", f"duplicate option id {option['id']}")
        seen.add(option["id"])
        _known(path, f"{field}.citations", option["citations"], kb.citations, "citation id")
        _check_drug(path, field, option, medications)
        for d_index, dose in enumerate(option.get("dosing", [])):
            _check_dose(path, f"{field}.dosing[{d_index}]", dose)


def _check_drug(path: Path, field: str, option: dict[str, Any], medications: dict[str, Any]) -> None:
    cls = option.get("drug_class")
    if cls is None:
        if option.get("orderable") or "rxnorm" in option:
            raise _fail(path, f"{field}.drug_class", "required for orderable options and RxNorm codes")
        return
    if cls not in medications:
        raise _fail(path, f"{field}.drug_class", f"unknown drug class {cls}")
    codes = {c["code"] for c in medications[cls]["rxnorm"]}
    if "rxnorm" in option and option["rxnorm"] not in codes:
        raise _fail(path, f"{field}.rxnorm", f"{option['rxnorm']} is not a code of class {cls}")
    if option.get("orderable") and not option.get("dosing"):
        raise _fail(path, f"{field}.dosing", "an orderable option needs the review's dosing text")


def _check_dose(path: Path, field: str, dose: dict[str, Any]) -> None:
    for key, unit in (("per_kg", "mg/kg"), ("per_m2", "mg/m²")):
        for index, amount in enumerate(dose.get(key, [])):
            printed = f"{amount_text(tuple(amount['mg']))} {unit}"
            if printed not in dose["text"]:
                raise _fail(path, f"{field}.{key}[{index}]", f"'{printed}' does not appear in the dose text")
