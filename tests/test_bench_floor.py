"""The benchmark floors (web.bench_floor): absent by default; the floor parses and answers no cards;
the read ceiling reads a hook call exactly as the hook does (same errors, every Observation normalized) but
never queries a fhirServer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.engine.model import LabValue
from cds_service.engine.observations import ObservationNormalizer
from tests.cds_helpers import car_t_patient, dev_config, full_prefetch, hook_body
from tests.loopback_http import Reply, Seen, serving

SCREENING = "iec-hs-screening"
READ = f"/_bench/read/{SCREENING}"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(dev_config(tmp_path, CDS_BENCH_FLOOR=True))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def screening_body() -> dict[str, Any]:
    return hook_body("patient-view", "p-1", prefetch=full_prefetch(car_t_patient("p-1")))


def test_the_floors_are_absent_by_default(tmp_path: Path) -> None:
    client = create_app(dev_config(tmp_path)).test_client()
    assert client.post("/_bench/floor", json={}).status_code == 404
    assert client.post(READ, json=screening_body()).status_code == 404


def test_the_floor_parses_and_answers_no_cards(client: FlaskClient) -> None:
    assert client.post("/_bench/floor", json=screening_body()).get_json() == {"cards": []}
    bad = client.post("/_bench/floor", data=b"{", content_type="application/json")
    assert bad.status_code == 400
    assert bad.get_json()["resourceType"] == "OperationOutcome"


def test_the_read_ceiling_normalizes_every_observation_and_answers_no_cards(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = screening_body()
    sent = len(body["prefetch"]["observations"]["entry"])
    seen: list[tuple[int, int]] = []
    normalize = ObservationNormalizer.normalize

    def spy(self: ObservationNormalizer, observations: list[Any]) -> dict[str, list[LabValue]]:
        labs = normalize(self, observations)
        seen.append((len(observations), sum(len(series) for series in labs.values())))
        return labs

    monkeypatch.setattr(ObservationNormalizer, "normalize", spy)
    response = client.post(READ, json=body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert len(seen) == 1
    observations, values = seen[0]
    assert observations == sent > 0
    assert values > 0  # they were read into lab values, not skipped


def test_the_read_ceiling_rejects_what_the_hook_rejects(client: FlaskClient) -> None:
    body = screening_body()
    del body["hookInstance"]
    hook = client.post(f"/cds-services/{SCREENING}", json=body)
    read = client.post(READ, json=body)
    assert hook.status_code == read.status_code == 400
    assert read.get_json()["issue"][0]["expression"] == hook.get_json()["issue"][0]["expression"]
    assert client.post("/_bench/read/no-such-service", json=screening_body()).status_code == 404
    wrong_hook = hook_body("order-sign", "p-1", prefetch=full_prefetch(car_t_patient("p-1")))
    assert client.post(READ, json=wrong_hook).status_code == 400


def test_the_read_ceiling_never_queries_a_fhir_server(client: FlaskClient) -> None:
    def answer(_seen: Seen) -> Reply:
        return Reply(404, {"resourceType": "OperationOutcome", "issue": []})

    with serving(answer) as server:
        body = hook_body("patient-view", "p-1", fhir_server=server.base_url, token="t")
        hook = client.post(f"/cds-services/{SCREENING}", json=body)
        queried_by_hook = len(server.seen)
        read = client.post(READ, json=body)
        assert len(server.seen) == queried_by_hook  # the hook did query; the ceiling did not
    assert queried_by_hook > 0
    assert hook.status_code == read.status_code == 412
    assert read.get_json()["resourceType"] == "OperationOutcome"
