"""Fewer repeat alerts (issue 17, item 8): an override "already aware / being treated" turns the same card
(same patient, status and grade) into a one-line info card for 24 h, across workers, on SQLite and PostgreSQL;
the store keeps only a keyed hash of the patient and card identity, read back from the card's uuid (nothing is
written when a card is issued)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from cds_service import create_app
from cds_service.hooks.feedback import FeedbackRecord
from cds_service.hooks.repeat_alerts import RepeatAlerts, key_of
from cds_service.preview.builder import build_hook_request, bundle_resources, service_for_hook
from cds_service.preview.scenarios import find_scenario
from cds_service.web.state import get_state

SCENARIO = "classic-iec-hs"


def _app(database_url: str, worker: str) -> Flask:
    ids = (f"{worker}-uuid-{n}" for n in itertools.count(1))
    return create_app(
        {
            "CDS_DEV_MODE": True,
            "DATABASE_URL": database_url,
            "UUID_FACTORY": lambda: next(ids),
            "REPEAT_ALERT_KEY": "test-secret",
        }
    )


def _screen(app: Flask) -> dict[str, Any]:
    scenario = find_scenario(SCENARIO)
    assert scenario is not None
    state = get_state(app)
    service = service_for_hook(state.registry, "patient-view")
    request = build_hook_request(service, bundle_resources(scenario.bundle()), None, scenario.at.date())
    answer = app.test_client().post(
        f"/cds-services/{service.id}",
        json=request,
        headers={"X-CDS-Evaluation-Instant": scenario.at.isoformat()},
    )
    assert answer.status_code == 200
    cards: list[dict[str, Any]] = answer.get_json()["cards"]
    assert len(cards) == 1
    return cards[0]


def _override(app: Flask, card: dict[str, Any], code: str) -> None:
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "overrideReason": {"reason": {"code": code, "system": card["overrideReasons"][0]["system"]}},
    }
    answer = app.test_client().post("/cds-services/iec-hs-screening/feedback", json={"feedback": [item]})
    assert answer.status_code == 200


def _check_across_workers(database_url: str) -> None:
    first, second = _app(database_url, "w1"), _app(database_url, "w2")
    card = _screen(first)
    assert card["indicator"] == "critical" and "detail" in card
    assert uuid.UUID(card["uuid"]).version == 8  # carries its identity (the other cards: the uuid factory's)
    assert _rows(database_url) == []  # issuing a card writes nothing
    _override(second, card, "not-relevant")  # not a repeat-alert reason: nothing changes
    assert _screen(first)["indicator"] == "critical"
    _override(second, card, "already-managed")  # "Already aware / being treated", on the other worker
    again = _screen(first)
    assert again["indicator"] == "info" and "detail" not in again
    assert again["summary"].startswith("Already acknowledged: IEC-HS met, grade 2")
    assert _screen(second)["indicator"] == "info"
    rows = _rows(database_url)
    for app in (first, second):
        get_state(app).feedback.engine.dispose()  # close the pooled connections (PostgreSQL warns otherwise)
    assert len(rows) == 1 and rows[0][0] == key_of(card["uuid"])
    assert SCENARIO not in str(rows)  # no patient id in clear


def _rows(database_url: str) -> list[Any]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = list(connection.execute(text("SELECT * FROM cds_card_suppression")))
    engine.dispose()
    return rows


def test_override_suppresses_the_same_card_across_workers_on_sqlite(tmp_path: Path) -> None:
    _check_across_workers(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")


def test_override_suppresses_the_same_card_across_workers_on_postgresql(postgres_database_url: str) -> None:
    _check_across_workers(postgres_database_url)


@pytest.fixture
def alerts(tmp_path: Path) -> RepeatAlerts:
    engine = create_engine(f"sqlite:///{tmp_path / 'alerts.sqlite3'}")
    return RepeatAlerts(engine, b"secret", 24, {"already-managed"})


def _overridden(card_uuid: str, code: str = "already-managed") -> FeedbackRecord:
    return FeedbackRecord("iec-hs-screening", card_uuid, "overridden", (), "x", override_code=code)


def test_a_new_status_or_grade_is_a_new_card_and_the_window_ends(alerts: RepeatAlerts) -> None:
    now = datetime(2026, 3, 15, 20, tzinfo=UTC)
    grade_2 = alerts.identity("p1", "iec-hs-screening", "met", 2)
    assert alerts.feedback([_overridden(alerts.card_uuid(grade_2, "c1"))], now) == 1
    assert alerts.acknowledged(grade_2, now + timedelta(hours=23))
    assert not alerts.acknowledged(grade_2, now + timedelta(hours=24, seconds=1))
    assert not alerts.acknowledged(alerts.identity("p1", "iec-hs-screening", "met", 3), now)
    assert not alerts.acknowledged(alerts.identity("p2", "iec-hs-screening", "met", 2), now)


def test_each_card_has_its_own_uuid_and_any_of_them_acknowledges_the_identity(alerts: RepeatAlerts) -> None:
    now = datetime(2026, 3, 15, 20, tzinfo=UTC)
    identity = alerts.identity("p1", "iec-hs-screening", "met", 2)
    uuids = {alerts.card_uuid(identity, str(uuid.uuid4())) for _ in range(1000)}
    assert len(uuids) == 1000 and {uuid.UUID(u).version for u in uuids} == {8}
    assert len({key_of(u) for u in uuids}) == 1
    assert alerts.card_uuid(identity, "uuid-7") == alerts.card_uuid(identity, "uuid-7")  # a test factory's
    assert alerts.feedback([_overridden(sorted(uuids)[500])], now) == 1
    assert alerts.acknowledged(identity, now)


def test_uuids_the_service_did_not_make_acknowledge_nothing(alerts: RepeatAlerts) -> None:
    now = datetime(2026, 3, 15, 20, tzinfo=UTC)
    identity = alerts.identity("p1", "iec-hs-screening", "met", 2)
    foreign = [str(uuid.uuid4()), "uuid-1", "not a uuid", "", str(uuid.UUID(int=0))]
    assert alerts.feedback([_overridden(u) for u in foreign], now) == 0
    ours = alerts.card_uuid(identity, "c1")
    assert alerts.feedback([_overridden(ours, code="not-relevant")], now) == 0  # not a repeat-alert reason
    assert not alerts.acknowledged(identity, now)


def test_expired_acknowledgements_are_removed_by_later_feedback(alerts: RepeatAlerts) -> None:
    now = datetime(2026, 3, 15, 20, tzinfo=UTC)
    old = alerts.identity("p1", "iec-hs-screening", "met", 2)
    alerts.feedback([_overridden(alerts.card_uuid(old, "c1"))], now)
    later = now + timedelta(days=2)
    alerts.feedback(
        [_overridden(alerts.card_uuid(alerts.identity("p2", "iec-hs-screening", "met", 2), "c2"))], later
    )
    with alerts.engine.connect() as connection:
        keys = list(connection.execute(text("SELECT identity FROM cds_card_suppression")).scalars())
    assert keys == [key_of(alerts.card_uuid(alerts.identity("p2", "iec-hs-screening", "met", 2), "c2"))]


def test_the_identity_is_a_keyed_hash(alerts: RepeatAlerts, tmp_path: Path) -> None:
    identity = alerts.identity("p1", "iec-hs-screening", "met", 2)
    assert "p1" not in identity and len(identity) == 64
    other = RepeatAlerts(create_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}"), b"other", 24, ())
    assert other.identity("p1", "iec-hs-screening", "met", 2) != identity
