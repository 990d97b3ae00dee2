"""The synthetic fixture scenarios (fixtures/scenarios/<name>.json + <name>.expected.json).

Used by the card preview page and by `cds-service fixtures list`. The fixtures ship with the source tree,
not with an installed wheel: without the directory there are simply no scenarios.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cds_service.datafiles import PROJECT_ROOT

SCENARIOS_DIR = PROJECT_ROOT / "fixtures" / "scenarios"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One fixture scenario: name, one-line title, evaluation instant and Bundle file."""

    name: str
    title: str
    at: datetime
    bundle_path: Path

    def bundle(self) -> dict[str, Any]:
        """The scenario's FHIR Bundle (read on each call: bundles are large and rarely used)."""
        data: dict[str, Any] = json.loads(self.bundle_path.read_text(encoding="utf-8"))
        return data


def list_scenarios(directory: Path = SCENARIOS_DIR) -> tuple[Scenario, ...]:
    """Every scenario with an expected file and a Bundle, sorted by name."""
    found: list[Scenario] = []
    for expected_path in sorted(directory.glob("*.expected.json")):
        expected = json.loads(expected_path.read_text(encoding="utf-8"))
        bundle_path = directory / str(expected.get("bundle", ""))
        if not bundle_path.is_file():
            continue
        found.append(
            Scenario(
                name=str(expected.get("scenario") or expected_path.name.removesuffix(".expected.json")),
                title=str(expected.get("title", "")),
                at=datetime.fromisoformat(str(expected["at"])),
                bundle_path=bundle_path,
            )
        )
    return tuple(found)


def find_scenario(name: str, directory: Path = SCENARIOS_DIR) -> Scenario | None:
    """The scenario called `name`, if any."""
    return next((s for s in list_scenarios(directory) if s.name == name), None)
