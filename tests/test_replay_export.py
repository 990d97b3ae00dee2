"""`cds-service replay --export-from URL`: a Bulk Data $export from the test FHIR stack with SMART Backend
Services credentials (private_key_jwt), polled, downloaded and replayed: the same rows as the replay of the
generator's export of the same patients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cds_service.cli import main
from cds_service.datafiles import PROJECT_ROOT
from tests.plugins.fhir_stack import FhirStack
from tests.replay_helpers import by_patient, population_export, replay, subset_export

PATIENTS = ("pop-01", "pop-14", "pop-17")
ARGS = ["--step", "24h", "--horizon", "14d", "--workers", "2", "--no-progress"]  # as replay_helpers.FAST


@pytest.fixture(scope="module")
def bulk(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    """A stack holding only three population patients; exports go through 202 polling, 500 per file."""
    seeds = [PROJECT_ROOT / "fixtures" / "population" / f"patient-{p[-2:]}.json" for p in PATIENTS]
    env = {"BULK_EXPORT_DELAY_MS": "300", "BULK_EXPORT_MAX_PER_FILE": "500"}
    with fhir_stack.start_extra(env, seeds=seeds) as extra:
        yield extra


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """The same patients replayed from the generator's export."""
    tmp = tmp_path_factory.mktemp("replay-reference")
    expected = subset_export(population_export(tmp / "generated"), tmp / "subset", PATIENTS)
    return by_patient(replay(expected, tmp / "reference") / "patients.csv")


def _key(stack: FhirStack, client_id: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{client_id}.pem"
    path.write_text(stack.backend_client(client_id).private_key_pem())
    return path


@pytest.mark.parametrize(("client_id", "scope"), [("backend-rs384", None), ("backend-es384", "system/*.rs")])
def test_export_from_the_stack_is_downloaded_and_replayed(
    bulk: FhirStack,
    reference: dict[str, dict[str, str]],
    tmp_path: Path,
    client_id: str,
    scope: str | None,
) -> None:
    out = tmp_path / "out"
    argv = ["replay", "--export-from", bulk.bulk_export_url("patient"), "--client-id", client_id]
    argv += ["--key", str(_key(bulk, client_id, tmp_path)), "--out", str(out), *ARGS]
    assert main(argv + (["--scope", scope] if scope else [])) == 0
    downloaded = sorted(p.name for p in (out / "export").glob("*.ndjson"))
    assert sum(name.startswith("Observation.") for name in downloaded) > 1  # several files of one type
    assert (out / "export" / "manifest.json").is_file()
    assert by_patient(out / "patients.csv") == reference
    assert list(by_patient(out / "patients.csv")) == list(PATIENTS)


def test_a_refused_token_is_an_export_error(
    bulk: FhirStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", "--export-from", bulk.fhir_base, "--client-id", "no-such-client"]
    argv += ["--key", str(_key(bulk, "backend-rs384", tmp_path)), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: export failed: token request: HTTP 4")
