"""Feedback: schema-validated, stored durably (survives an app restart) and idempotently, on SQLite and on a
real PostgreSQL server (tests.plugins.postgres)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import create_app
from cds_service.hooks.feedback import FeedbackRecord, FeedbackStore, normalize_timestamp
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config

FEEDBACK = "/cds-services/iec-hs-screening/feedback"
ACCEPTED = {
    "card": "card-1",
    "outcome": "accepted",
    "acceptedSuggestions": [{"id": "s-2"}, {"id": "s-1"}],
    "outcomeTimestamp": "2026-11-24T00:10:24.485Z",
}
OVERRIDDEN = {  # as the CDS Hooks Sandbox sends it: reason without display
    "card": "card-2",
    "outcome": "overridden",
    "outcomeTimestamp": "2026-11-24T00:11:00Z",
    "overrideReason": {
        "reason": {"code": "pt-refused", "system": "http://example.org/override"},
        "userComment": "patient declined",
    },
}


def app_for(database_url: str, tmp_path: Path) -> Flask:
    return create_app(dev_config(tmp_path, DATABASE_URL=database_url))


def post(app: Flask, *items: dict[str, Any], path: str = FEEDBACK) -> Any:
    return app.test_client().post(path, json={"feedback": list(items)})


def roundtrip(database_url: str, tmp_path: Path) -> None:
    first = app_for(database_url, tmp_path)
    response = post(first, ACCEPTED, OVERRIDDEN)
    assert response.status_code == 200
    assert response.get_json() == {"received": 2, "stored": 2}
    get_state(first).feedback.engine.dispose()

    restarted = app_for(database_url, tmp_path)  # a new app (and engine) on the same database
    records = get_state(restarted).feedback.all("iec-hs-screening")
    assert records == [
        FeedbackRecord(
            "iec-hs-screening", "card-1", "accepted", ("s-1", "s-2"), "2026-11-24T00:10:24.485000Z"
        ),
        FeedbackRecord(
            "iec-hs-screening",
            "card-2",
            "overridden",
            (),
            "2026-11-24T00:11:00.000000Z",
            override_system="http://example.org/override",
            override_code="pt-refused",
            override_comment="patient declined",
        ),
    ]
    # The same items again (re-sent by a client after a restart) are not stored twice.
    reordered = {
        **ACCEPTED,
        "acceptedSuggestions": [{"id": "s-1"}, {"id": "s-2"}],
        "outcomeTimestamp": "2026-11-24T00:10:24.485+00:00",
    }
    assert post(restarted, reordered, OVERRIDDEN).get_json() == {"received": 2, "stored": 0}
    assert len(get_state(restarted).feedback.all()) == 2
    get_state(restarted).feedback.engine.dispose()


def test_sqlite_roundtrip_survives_a_restart_and_is_idempotent(tmp_path: Path) -> None:
    roundtrip(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'feedback.sqlite3'}", tmp_path)


def test_postgresql_roundtrip_survives_a_restart_and_is_idempotent(
    postgres_database_url: str, tmp_path: Path
) -> None:
    roundtrip(postgres_database_url, tmp_path)


def test_postgresql_concurrent_duplicates_store_once(postgres_database_url: str) -> None:
    store = FeedbackStore(postgres_database_url)
    record = FeedbackRecord("iec-hs-screening", "card-9", "accepted", ("s",), "2026-01-01T00:00:00.000000Z")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(store.add([record]))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0] * 7 + [1]
    assert len(store.all()) == 1
    store.engine.dispose()


def test_feedback_is_kept_per_service_and_outcome(tmp_path: Path) -> None:
    app = create_app(dev_config(tmp_path))
    post(app, ACCEPTED)
    post(app, ACCEPTED, path="/cds-services/iec-hs-order-sign/feedback")
    post(app, {**ACCEPTED, "acceptedSuggestions": [{"id": "s-1"}]})  # a different selection
    later = {**ACCEPTED, "outcomeTimestamp": "2026-11-24T00:12:00Z"}  # the same card, accepted again later
    assert post(app, later).get_json()["stored"] == 1
    store = get_state(app).feedback
    assert len(store.all("iec-hs-screening")) == 3 and len(store.all("iec-hs-order-sign")) == 1


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        ({}, "feedback"),
        ({"feedback": []}, "feedback"),
        ({"feedback": [{**ACCEPTED, "card": 5}]}, "feedback[0].card"),
        ({"feedback": [{**ACCEPTED, "outcome": "ignored"}]}, "feedback[0].outcome"),
        (
            {"feedback": [{k: v for k, v in ACCEPTED.items() if k != "acceptedSuggestions"}]},
            "feedback[0].acceptedSuggestions",
        ),
        ({"feedback": [{**ACCEPTED, "acceptedSuggestions": []}]}, "feedback[0].acceptedSuggestions"),
        ({"feedback": [{**ACCEPTED, "acceptedSuggestions": [{}]}]}, "feedback[0].acceptedSuggestions[0].id"),
        ({"feedback": [{**ACCEPTED, "outcomeTimestamp": "yesterday"}]}, "feedback[0].outcomeTimestamp"),
        ({"feedback": [{**ACCEPTED, "outcomeTimestamp": "2026-11-24"}]}, "feedback[0].outcomeTimestamp"),
        ({"feedback": [OVERRIDDEN, {k: v for k, v in ACCEPTED.items() if k != "card"}]}, "feedback[1].card"),
        (
            {"feedback": [{**OVERRIDDEN, "overrideReason": {"reason": {"code": "x"}}}]},
            "feedback[0].overrideReason.reason.system",
        ),
    ],
)
def test_invalid_feedback_is_400_naming_the_field(
    tmp_path: Path, body: dict[str, Any], expression: str
) -> None:
    app = create_app(dev_config(tmp_path))
    response = app.test_client().post(FEEDBACK, json=body)
    assert response.status_code == 400
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "invalid" and issue["expression"] == [expression]
    assert get_state(app).feedback.all() == []


def test_feedback_rejects_bad_requests(tmp_path: Path) -> None:
    client = create_app(dev_config(tmp_path)).test_client()
    assert client.post(FEEDBACK, data="x", content_type="text/plain").status_code == 415
    assert client.post(FEEDBACK, data="{", content_type="application/json").status_code == 400
    assert client.get(FEEDBACK).status_code == 405
    assert client.post("/cds-services/unknown/feedback", json={"feedback": [ACCEPTED]}).status_code == 404


def test_overridden_without_a_reason_is_accepted(tmp_path: Path) -> None:
    app = create_app(dev_config(tmp_path))
    bare = {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:10:24Z"}
    assert post(app, bare).get_json() == {"received": 1, "stored": 1}


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("2026-11-24T00:10:24.485Z", "2026-11-24T00:10:24.485000Z"),
        ("2026-11-24T00:10:24Z", "2026-11-24T00:10:24.000000Z"),
        ("2026-11-24T01:10:24.4851239+01:00", "2026-11-24T00:10:24.485123Z"),
        ("2026-11-23T19:10:24-05:00", "2026-11-24T00:10:24.000000Z"),
    ],
)
def test_timestamps_are_normalized_to_utc(value: str, normalized: str) -> None:
    assert normalize_timestamp(value) == normalized
