"""The hook request fixtures (fixtures/hooks) are accepted by the service as the variants promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.web.app import create_app
from tests.cds_helpers import assert_conformant, dev_config

HOOKS = Path(__file__).parent.parent / "fixtures" / "hooks"
OFFLINE = sorted(
    p for p in HOOKS.glob("*.json") if "prefetch." not in p.name or "full" in p.name or "null" in p.name
)


def post(tmp_path: Path, path: Path) -> tuple[int, dict[str, object]]:
    body = json.loads(path.read_text())
    service = path.name.split(".")[1]
    client = create_app(dev_config(tmp_path)).test_client()
    response = client.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.get_json()


def test_every_service_has_every_variant() -> None:
    names = {p.name for p in HOOKS.glob("*.json")}
    for service in ("iec-hs-screening", "iec-hs-order-select", "iec-hs-order-sign"):
        for variant in ("full-prefetch", "partial-prefetch", "null-prefetch", "no-prefetch"):
            assert f"classic-iec-hs.{service}.{variant}.json" in names
    assert "classic-iec-hs.iec-hs-order-sign.sandbox-draft-orders.json" in names


@pytest.mark.parametrize("path", OFFLINE, ids=[p.name for p in OFFLINE])
def test_prefetched_variants_answer_with_valid_cards(tmp_path: Path, path: Path) -> None:
    status, body = post(tmp_path, path)
    assert status == 200, body
    assert_conformant(body)


def test_fallback_variants_need_a_reachable_fhir_server(tmp_path: Path) -> None:
    """Without the stack running, the required keys cannot be fetched: 412 naming them, never a 500."""
    status, body = post(tmp_path, HOOKS / "classic-iec-hs.iec-hs-screening.no-prefetch.json")
    assert status == 412
    assert "observations" in json.dumps(body)
