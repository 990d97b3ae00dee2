"""Drug-class and product lookups are remembered per distinct concept, bounded, and never change an answer."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.engine import knowledge as knowledge_module
from cds_service.engine.events import drug_class, product_of
from cds_service.engine.knowledge import Knowledge, load_knowledge

TOCILIZUMAB = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "612865"}]}
BY_NAME = {"text": "Yescarta (axicabtagene ciloleucel) suspension"}


def _fresh() -> Knowledge:
    kb = load_knowledge()
    kb._concepts.clear()
    return kb


def test_the_remembered_answer_is_the_computed_one() -> None:
    kb = _fresh()
    assert drug_class(kb, TOCILIZUMAB) == "tocilizumab"
    assert drug_class(kb, TOCILIZUMAB) == "tocilizumab"  # from the memo
    assert product_of(kb, BY_NAME) == ("axicabtagene-ciloleucel", "name")
    assert product_of(kb, BY_NAME) == ("axicabtagene-ciloleucel", "name")
    assert drug_class(kb, BY_NAME) is None  # the same concept, another question: its own entry
    assert len(kb._concepts) == 3


def test_a_concept_that_is_not_json_is_computed_every_time() -> None:
    kb = _fresh()
    calls: list[Any] = []

    def compute(_: Knowledge, concept: Any) -> str:
        calls.append(concept)
        return "x"

    odd = {"coding": {1, 2}}  # a set: not JSON
    assert kb.memoized("test", odd, compute) == "x"
    assert kb.memoized("test", odd, compute) == "x"
    assert len(calls) == 2
    assert not kb._concepts


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    kb = _fresh()
    monkeypatch.setattr(knowledge_module, "MEMO_LIMIT", 5)
    for n in range(12):
        assert drug_class(kb, {"text": f"unknown drug {n}"}) is None
        assert len(kb._concepts) <= 5
    assert drug_class(kb, TOCILIZUMAB) == "tocilizumab"
