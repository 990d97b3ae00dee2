"""Deeply nested input: bounded recursion in the engine, and the hook's depth rule for prefetch data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cds_service.engine import evaluate
from cds_service.web.app import create_app
from tests.cds_helpers import dev_config
from tests.engine_helpers import KB
from tests.fhir_builders import bundle, car_t, day, obs, patient


def nested_bundles(depth: int, inner: dict[str, Any]) -> dict[str, Any]:
    value = inner
    for _ in range(depth):
        value = bundle(value)
    return value


def test_nested_bundles_are_read_up_to_a_bound_then_reported() -> None:
    shallow = evaluate(nested_bundles(3, obs("2276-4", 900, "ng/mL", day(12))), at=day(13), knowledge=KB)
    assert len(shallow.labs["ferritin"]) == 1
    deep = evaluate(nested_bundles(300, obs("2276-4", 900, "ng/mL", day(12))), at=day(13), knowledge=KB)
    assert "ferritin" not in deep.labs
    assert any("nested too deeply" in issue.problem for issue in deep.data_quality.issues)


def test_deep_nesting_inside_prefetch_data_is_tolerated(tmp_path: Path) -> None:
    """Junk nested 300 levels inside a prefetched resource is ignored by the engine, not a 400 or 500."""
    app = create_app(dev_config(tmp_path))
    junk: Any = "leaf"
    for _ in range(300):
        junk = {"x": junk}
    observation = obs("2276-4", 900, "ng/mL", day(12)) | {"extension": [{"url": "urn:x", "valueX": junk}]}
    body = {
        "hook": "patient-view",
        "hookInstance": "0c7f1b5e-1d5b-4c31-9d8c-3f0e2f3b9a11",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {"patient": patient(), "observations": bundle(observation, car_t())},
    }
    response = app.test_client().post(
        "/cds-services/iec-hs-screening", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 200
