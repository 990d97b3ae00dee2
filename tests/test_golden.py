"""Whole-response golden tests (issue 17, item 10): a change of wording, order or suggestions is a diff.

Regenerate with `.venv/bin/python -m tests.golden` (fixtures/README.md) and review the diff.
"""

from __future__ import annotations

import difflib

import pytest

from cds_service.preview.scenarios import list_scenarios
from tests.golden import CASES, GOLDEN_DIR, case_name, dump, responses

RESPONSES = responses()


def test_every_scenario_and_hook_has_a_golden_response_and_nothing_else() -> None:
    expected = {case_name(s, hook, drug) for s in list_scenarios() for hook, drug in CASES}
    assert set(RESPONSES) == expected
    stored = {path.stem for path in GOLDEN_DIR.glob("*.json")}
    assert stored == expected, "regenerate: .venv/bin/python -m tests.golden"


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_response_matches_its_golden_file(name: str) -> None:
    path = GOLDEN_DIR / f"{name}.json"
    assert path.is_file(), f"no golden file {path.name}: run .venv/bin/python -m tests.golden"
    want, got = path.read_text(encoding="utf-8"), dump(RESPONSES[name])
    if want != got:
        diff = "".join(
            difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "now", n=2)
        )
        pytest.fail(
            f"{name} differs from {path.name} (regenerate with .venv/bin/python -m tests.golden):\n{diff}"
        )
