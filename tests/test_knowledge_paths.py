"""One Knowledge through every path: a site's own mappings directory reaches the hook's cards, the CLI, the
SMART dashboard and the preview page. The site here renames ferritin ("Serum ferritin (site name)"): a
path that fell back to the project's default mappings would still say "Ferritin"."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cds_service.smart.devserver import serve
from cds_service.web.app import create_app
from tests.plugins.fhir_stack import FhirStack
from tests.test_smart_launch import CARD_AT, PATIENT, follow

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "fixtures" / "hooks" / "classic-iec-hs.iec-hs-screening.full-prefetch.json"
CLASSIC = ROOT / "fixtures" / "scenarios" / "classic-iec-hs.json"
SITE_NAME = "Serum ferritin (site name)"


@pytest.fixture(scope="module")
def site_mappings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("site") / "mappings"
    shutil.copytree(ROOT / "mappings", directory)
    path = directory / "analytes.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["analytes"]["ferritin"]["display"] = SITE_NAME
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def call_hook(app: Any) -> Any:
    """The fixture hook call at the card's instant (a development server honours the instant header): the
    card speaks inside the risk window after the infusion, and names ferritin by the site's display name."""
    body = json.loads(HOOK.read_text())
    return app.test_client().post(
        "/cds-services/iec-hs-screening", json=body, headers={"X-CDS-Evaluation-Instant": CARD_AT}
    )


def test_the_hook_uses_the_apps_own_mappings(site_mappings: Path, tmp_path: Path) -> None:
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'f.sqlite3'}",
            "MAPPINGS_DIR": str(site_mappings),
        }
    )
    response = call_hook(app)
    assert response.status_code == 200
    text = json.dumps(response.get_json())
    assert SITE_NAME in text


def test_the_default_app_still_says_ferritin(tmp_path: Path) -> None:
    app = create_app({"CDS_DEV_MODE": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'f.sqlite3'}"})
    text = json.dumps(call_hook(app).get_json())
    assert SITE_NAME not in text and "Ferritin" in text


def test_the_cli_uses_the_mappings_option_and_the_environment(site_mappings: Path) -> None:
    command = [sys.executable, "-m", "cds_service.cli", "evaluate", str(CLASSIC), "--at", CARD_AT]
    by_option = subprocess.run([*command, "--mappings", str(site_mappings)], capture_output=True, text=True)
    assert by_option.returncode == 0, by_option.stderr
    assert SITE_NAME in by_option.stdout
    env = {"CDS_MAPPINGS_DIR": str(site_mappings), "PATH": "/usr/bin:/bin"}
    by_env = subprocess.run(command, capture_output=True, text=True, env=env)
    assert by_env.returncode == 0, by_env.stderr
    assert SITE_NAME in by_env.stdout
    default = subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert SITE_NAME not in default.stdout


def test_the_preview_page_evaluates_with_the_apps_mappings(site_mappings: Path, tmp_path: Path) -> None:
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'f.sqlite3'}",
            "MAPPINGS_DIR": str(site_mappings),
        }
    )
    client = app.test_client()
    built = client.post("/preview/hook-request", json={"scenario": "classic-iec-hs", "hook": "patient-view"})
    assert built.status_code == 200, built.get_data(as_text=True)
    body = built.get_json()
    answered = client.post(
        f"/cds-services/{body['serviceId']}",
        json=body["request"],
        headers={"X-CDS-Evaluation-Instant": body["evaluationInstant"]},
    )
    assert answered.status_code == 200
    assert SITE_NAME in json.dumps(answered.get_json())


@pytest.fixture(scope="module")
def site_server(
    fhir_stack: FhirStack, site_mappings: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    database = tmp_path_factory.mktemp("site-smart") / "feedback.sqlite3"
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{fhir_stack.app_port}",
            "DATABASE_URL": f"sqlite:///{database}",
            "MAPPINGS_DIR": str(site_mappings),
        }
    )
    with serve(app, fhir_stack.app_port) as base:
        yield base


def test_the_dashboard_uses_the_apps_mappings(fhir_stack: FhirStack, site_server: str) -> None:
    app_context = json.dumps({"patient": PATIENT, "at": CARD_AT, "view": "criteria"})
    launch = fhir_stack.ehr_launch_url(PATIENT, f"{site_server}/smart/launch", app_context=app_context)
    page = follow(requests.Session(), launch).last
    assert page.status_code == 200, page.text[:2000]
    assert SITE_NAME in page.text
