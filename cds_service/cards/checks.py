"""Cross-reference checks for cards/ data (after schema validation): every name must resolve.

Citations against mappings/citations.yaml, drug classes and RxNorm codes against mappings/medications.yaml,
analytes and products against mappings/, template keys and placeholders against
:mod:`cds_service.cards.vocab`, and every number or phrase of a structured dose against the verbatim dose text
it annotates (so arithmetic and draft orders can never use a number the seed did not print).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cds_service.cards import vocab
from cds_service.cards.templating import TemplateError, placeholders
from cds_service.engine.knowledge import Knowledge
from cds_service.errors import DataFileError

PRINTED_UNITS = {"mg": "mg", "mg/kg": "mg/kg", "mg/m2": "mg/m²"}


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


def amount_text(mg: Iterable[float]) -> str:
    """How the seed prints a dose number or range: 10, 1–2, 50–100 (en dash)."""
    return "–".join(f"{value:g}" for value in mg)


def check_templates(path: Path, doc: dict[str, Any], kb: Knowledge, medications: dict[str, Any]) -> None:
    _placeholders(path, "$.source.topic.system", doc["source"]["topic"]["system"], vocab.URL_PLACEHOLDERS)
    _placeholders(path, "$.override_reason_system", doc["override_reason_system"], vocab.URL_PLACEHOLDERS)
    _known(path, "$.product_short_names", doc["product_short_names"], kb.products, "product id")
    _known(path, "$.products_not_identified", doc["products_not_identified"], kb.products, "product id")
    _known(path, "$.drug_names", doc["drug_names"], medications, "drug class")
    _known(path, "$.citation_short", doc["citation_short"], kb.citations, "citation id")
    _known(path, "$.unread_analytes", doc["unread_analytes"], kb.analytes, "analyte")
    _known(path, "$.prefetch_gaps", doc["prefetch_gaps"], vocab.PREFETCH_KEYS, "prefetch key")
    missing = sorted(vocab.PREFETCH_KEYS - set(doc["prefetch_gaps"]))
    if missing:
        raise _fail(path, "$.prefetch_gaps", f"missing: {', '.join(missing)}")
    _check_gap_words(path, doc["gap_words"], kb)
    _check_labs(path, doc["orderable_labs"], kb)
    _check_keys(path, "$.labels", doc["labels"], vocab.LABELS)
    statements = {k: v["text"] for k, v in doc["statements"].items()}
    _check_keys(path, "$.statements", statements, vocab.STATEMENTS)
    for key, statement in doc["statements"].items():
        _known(path, f"$.statements.{key}.citations", statement["citations"], kb.citations, "citation id")
    for card, spec in vocab.CARD_KEYS.items():
        _check_card(path, card, doc["cards"][card], spec)


def _check_gap_words(path: Path, words: dict[str, Any], kb: Knowledge) -> None:
    """Exactly the engine's gap codes (mappings/criteria/iec_hs.yaml `gaps`): a code the engine can name
    without card words would reach a person as a bare code; words for an unknown code are dead text."""
    codes = set(kb.criteria["iec_hs"]["gaps"])
    _known(path, "$.gap_words", words, codes, "IEC-HS gap code")
    missing = sorted(codes - set(words))
    if missing:
        raise _fail(path, "$.gap_words", f"no words for the engine's gap codes: {', '.join(missing)}")
    for code, entry in words.items():
        for part in ("summary", "detail"):
            _placeholders(path, f"$.gap_words.{code}.{part}", entry[part], vocab.GAP_WORD_PLACEHOLDERS)


def _check_labs(path: Path, labs: dict[str, Any], kb: Knowledge) -> None:
    _known(path, "$.orderable_labs", labs, kb.analytes, "analyte")
    for analyte in labs:
        if kb.first_loinc(analyte) is None:
            raise _fail(path, f"$.orderable_labs.{analyte}", "no LOINC code in mappings/analytes.yaml")


def _check_keys(path: Path, field: str, texts: dict[str, str], spec: dict[str, frozenset[str]]) -> None:
    missing = sorted(set(spec) - set(texts))
    if missing:
        raise _fail(path, field, f"missing: {', '.join(missing)}")
    _known(path, field, texts, spec, "key")
    for key, text in texts.items():
        _placeholders(path, f"{field}.{key}", text, spec[key])


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


def check_treatments(
    path: Path, doc: dict[str, Any], kb: Knowledge, medications: dict[str, Any], routes: dict[str, Any]
) -> None:
    seen: set[str] = set()
    for index, option in enumerate(doc["options"]):
        field = f"$.options[{index}]"
        if option["id"] in seen:
            raise _fail(path, f"{field}.id", f"duplicate option id {option['id']}")
        seen.add(option["id"])
        _known(path, f"{field}.citations", option["citations"], kb.citations, "citation id")
        _check_drug(path, field, option, medications)
        for d_index, dose in enumerate(option.get("dosing", [])):
            _check_dose(path, f"{field}.dosing[{d_index}]", dose, routes)


def _check_drug(path: Path, field: str, option: dict[str, Any], medications: dict[str, Any]) -> None:
    cls = option.get("drug_class")
    if cls is None:
        if "rxnorm" in option or option.get("dosing"):
            raise _fail(path, f"{field}.drug_class", "required for dosed options and RxNorm codes")
        return
    if cls not in medications:
        raise _fail(path, f"{field}.drug_class", f"unknown drug class {cls}")
    codes = {c["code"] for c in medications[cls]["rxnorm"]}
    if "rxnorm" in option and option["rxnorm"] not in codes:
        raise _fail(path, f"{field}.rxnorm", f"{option['rxnorm']} is not a code of class {cls}")


def _check_dose(path: Path, field: str, dose: dict[str, Any], routes: dict[str, Any]) -> None:
    text = dose["text"]
    for key, unit in (("per_kg", "mg/kg"), ("per_m2", "mg/m²")):
        for index, amount in enumerate(dose.get(key, [])):
            printed = f"{amount_text(amount['mg'])} {unit}"
            if printed not in text:
                raise _fail(path, f"{field}.{key}[{index}]", f"'{printed}' does not appear in the dose text")
            every = amount.get("every_hours")
            if every is not None and f"every {every:g} h" not in text:
                raise _fail(
                    path, f"{field}.{key}[{index}].every_hours", f"'every {every:g} h' not in the text"
                )
            if (every is None) == (amount["basis"] == "dose" and "every" in amount["label"]):
                raise _fail(
                    path, f"{field}.{key}[{index}]", "a per-dose amount given 'every n h' needs every_hours"
                )
    order = dose.get("order")
    if order is not None:
        _check_order(path, f"{field}.order", order, text, routes)


def _check_order(path: Path, field: str, order: dict[str, Any], text: str, routes: dict[str, Any]) -> None:
    dose = order["dose"]
    numbers = [dose["value"]] if "value" in dose else [n for n in (dose.get("low"), dose.get("high")) if n]
    printed = f"{amount_text(numbers)} {PRINTED_UNITS[dose['unit']]}"
    if printed not in text:
        raise _fail(path, f"{field}.dose", f"'{printed}' does not appear in the dose text")
    for part in ("timing", "route"):
        says = order.get(part, {}).get("says")
        if says is not None and says not in text:
            raise _fail(path, f"{field}.{part}.says", f"'{says}' does not appear in the dose text")
    route = order.get("route")
    if route is not None and route["code"] not in routes:
        raise _fail(path, f"{field}.route.code", f"unknown route {route['code']} (templates.yaml routes)")
