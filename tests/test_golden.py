"""Whole-response golden tests (issue 17, item 10): a change of wording, order or suggestions is a diff.

Every scenario of fixtures/scenarios/ and fixtures/scenarios-raw/ (found by glob) x every hook. Regenerate
with `.venv/bin/python -m tests.golden` (fixtures/README.md) and review the diff.
"""

from __future__ import annotations

import difflib
from typing import Any

import pytest

from tests.golden import GOLDEN_DIR, case_names, dump, golden_scenarios, responses, scenario_bundles

NAMES = case_names()


@pytest.fixture(scope="module")
def golden_responses() -> dict[str, dict[str, Any]]:
    """Computed once per module by the real endpoint (a failure is a test failure, not a collection error)."""
    return responses()


def test_every_scenario_bundle_present_is_covered() -> None:
    covered = {s.bundle_path for s in golden_scenarios()}
    assert scenario_bundles() <= covered, "a scenario Bundle without an expected file: no golden response"
    assert len(covered) >= 26  # 13 scenarios and their raw-only twins at the time of writing


def test_every_scenario_and_hook_has_a_golden_response_and_nothing_else(
    golden_responses: dict[str, dict[str, Any]],
) -> None:
    assert sorted(golden_responses) == NAMES
    stored = sorted(path.stem for path in GOLDEN_DIR.glob("*.json"))
    assert stored == NAMES, "regenerate: .venv/bin/python -m tests.golden"


@pytest.mark.parametrize("name", NAMES)
def test_response_matches_its_golden_file(name: str, golden_responses: dict[str, dict[str, Any]]) -> None:
    path = GOLDEN_DIR / f"{name}.json"
    assert path.is_file(), f"no golden file {path.name}: run .venv/bin/python -m tests.golden"
    want, got = path.read_text(encoding="utf-8"), dump(golden_responses[name])
    if want != got:
        diff = "".join(
            difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "now", n=2)
        )
        pytest.fail(
            f"{name} differs from {path.name} (regenerate with .venv/bin/python -m tests.golden):\n{diff}"
        )
