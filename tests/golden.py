"""Whole-response golden files: every fixture scenario (fixtures/scenarios/ and the raw-only twins in
fixtures/scenarios-raw/, found by glob) x every hook, the full CDS response with uuids and instants
normalised, checked in under fixtures/golden/.

Regenerate (after a deliberate change of wording, order or suggestions; review the diff):

    .venv/bin/python -m tests.golden

Order hooks carry one draft of each kind the preview offers first for its role: tocilizumab (IL-6 directed,
the warning) and anakinra (IEC-HS directed, the info card). Every `*.expected.json` with its Bundle in
either scenario directory is covered; a scenario the generator adds (or a new raw twin) only needs a
regeneration.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from cds_service import create_app
from cds_service.preview.builder import build_hook_request, bundle_resources, draft_drugs, service_for_hook
from cds_service.preview.scenarios import SCENARIOS_DIR, Scenario, list_scenarios
from cds_service.web.state import get_state

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "golden"
SCENARIO_DIRS = (SCENARIOS_DIR, SCENARIOS_DIR.parent / "scenarios-raw")
CASES = (("patient-view", None), ("order-select", "tocilizumab"), ("order-sign", "anakinra"))
_UUID = re.compile(r"^uuid-\d+$")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def golden_scenarios() -> tuple[Scenario, ...]:
    """Every scenario with an expected file and a Bundle in fixtures/scenarios/ and scenarios-raw/."""
    return tuple(s for directory in SCENARIO_DIRS for s in list_scenarios(directory))


def scenario_bundles() -> set[Path]:
    """Every Bundle file present in the scenario directories (an expected file is not a Bundle)."""
    return {
        path
        for directory in SCENARIO_DIRS
        for path in directory.glob("*.json")
        if not path.name.endswith(".expected.json")
    }


def case_names() -> list[str]:
    return sorted(case_name(s, hook, drug) for s in golden_scenarios() for hook, drug in CASES)


def case_name(scenario: Scenario, hook: str, drug: str | None) -> str:
    return f"{scenario.name}.{hook}" + (f".{drug}" if drug else "")


def normalise(value: Any) -> Any:
    """uuids -> "<uuid>"; instants inside strings -> "<instant>" (dates stay: they are evaluation days)."""
    if isinstance(value, dict):
        return {k: ("<uuid>" if k == "uuid" else normalise(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        return _INSTANT.sub("<instant>", value)
    return value


def responses() -> dict[str, dict[str, Any]]:
    """Every case's normalised response, from the real endpoint of a development-mode app."""
    with tempfile.TemporaryDirectory() as tmp:
        ids = (f"uuid-{n}" for n in itertools.count(1))
        app = create_app(
            {
                "CDS_DEV_MODE": True,
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'golden.sqlite3'}",
                "UUID_FACTORY": lambda: next(ids),
                "REPEAT_ALERTS": None,
            }
        )
        state, client = get_state(app), app.test_client()
        drugs = {d.id: d for d in draft_drugs(state.knowledge)}
        out: dict[str, dict[str, Any]] = {}
        for scenario in golden_scenarios():
            resources = bundle_resources(scenario.bundle())
            for hook, drug in CASES:
                service = service_for_hook(state.registry, hook)
                request = build_hook_request(
                    service, resources, drugs[drug] if drug else None, scenario.at.date()
                )
                answer = client.post(
                    f"/cds-services/{service.id}",
                    json=request,
                    headers={"X-CDS-Evaluation-Instant": scenario.at.isoformat()},
                )
                assert answer.status_code == 200, (scenario.name, hook, answer.get_data(as_text=True))
                out[case_name(scenario, hook, drug)] = normalise(answer.get_json())
        return out


def dump(response: dict[str, Any]) -> str:
    return json.dumps(response, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    found = responses()
    for stale in GOLDEN_DIR.glob("*.json"):
        if stale.stem not in found:
            stale.unlink()
    for name, response in found.items():
        (GOLDEN_DIR / f"{name}.json").write_text(dump(response), encoding="utf-8")
    print(f"wrote {len(found)} golden responses to {GOLDEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
