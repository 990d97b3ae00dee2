"""The watch tables on SQLite and on a real PostgreSQL: enrolment rules, and the guarantees several processes
rely on -- a patient is claimed by one process at a time, a result written with a lost lease is not written
(nor its change or notifications), a change's notification is queued once, an outbox row is delivered by one
process at a time. Two stores on one database stand for two processes (each has its own engine and pool)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds_service.watch.store import Change, WatchStore, new_change_id

SERVER = "https://ehr.example.org/fhir"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'watch.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_database_url")


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[WatchStore, WatchStore]]:
    first, second = WatchStore(database_url), WatchStore(database_url)
    yield first, second
    first.engine.dispose()
    second.engine.dispose()


def test_enrolment_is_idempotent_and_a_request_to_leave_sticks(stores: tuple[WatchStore, WatchStore]) -> None:
    store, _ = stores
    now = time.time()
    entry, created = store.enrol(
        SERVER, "p-1", infusion_at=now - 86400, source="hook", now=now, reactivate=False
    )
    assert created and entry.active and entry.force and len(entry.entry_id) >= 24
    again, created = store.enrol(
        SERVER, "p-1", infusion_at=now - 86400, source="hook", now=now, reactivate=False
    )
    assert not created and again.id == entry.id
    store.leave(entry.id, "request", now)
    left, created = store.enrol(
        SERVER, "p-1", infusion_at=now - 86400, source="hook", now=now, reactivate=False
    )
    assert not created and not left.active and left.left_reason == "request"  # a hook call does not undo it
    back, created = store.enrol(SERVER, "p-1", infusion_at=now, source="hook", now=now, reactivate=False)
    assert created and back.active and back.infusion_at == now  # another infusion: watched again
    store.leave(entry.id, "request", now)
    api, created = store.enrol(SERVER, "p-1", infusion_at=None, source="api", now=now, reactivate=True)
    assert created and api.active and api.source == "api"
    assert [e.patient_id for e in store.active()] == ["p-1"] and store.active([]) == []


def test_each_patient_is_claimed_by_one_process_at_a_time(stores: tuple[WatchStore, WatchStore]) -> None:
    first, second = stores
    now = time.time()
    for i in range(40):
        first.enrol(SERVER, f"p-{i}", infusion_at=None, source="api", now=now, reactivate=True)
    claimed: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(4)

    def claim(store: WatchStore, owner: str) -> None:
        barrier.wait()
        while batch := store.claim(owner, time.time(), 60, 3):
            claimed[owner[0]].extend(e.id for e in batch)
            time.sleep(0.01)  # "evaluating": the other process gets its turn

    threads = [
        threading.Thread(target=claim, args=(store, f"{name}{n}"))
        for store, name in ((first, "a"), (second, "b"))
        for n in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = claimed["a"] + claimed["b"]
    assert sorted(everything) == sorted(set(everything)) and len(everything) == 40
    assert claimed["a"] and claimed["b"]  # both processes got work
    assert first.claim("c", time.time(), 60, 10) == []  # all leased
    assert len(first.claim("c", time.time() + 61, 60, 100)) == 40  # expired leases are taken over


def test_a_result_written_with_a_lost_lease_is_discarded_with_its_change(
    stores: tuple[WatchStore, WatchStore],
) -> None:
    first, second = stores
    now = time.time()
    first.enrol(SERVER, "p-1", infusion_at=None, source="api", now=now, reactivate=True)
    (slow,) = first.claim("slow", now, 1, 10)
    (fast,) = second.claim("fast", now + 2, 60, 10)  # the slow process's lease ran out
    change = Change(new_change_id(), None, None, "met", 1, 12, now, {"webhook": {"changeId": "x"}})
    assert second.finish(fast, "fast", {"status": "met", "grade": 1}, [change], now=now)
    stale = Change(new_change_id(), None, None, "met", 1, 12, now, {"webhook": {"changeId": "y"}})
    assert not first.finish(slow, "slow", {"status": "possible"}, [stale], now=now)
    (stored,) = first.active()
    assert (stored.status, stored.grade) == ("met", 1)
    assert [c["change_id"] for c in first.changes()] == [change.change_id]
    assert [o["change_id"] for o in first.outbox()] == [change.change_id]


def test_outbox_rows_are_delivered_by_one_process_and_retried_on_schedule(
    stores: tuple[WatchStore, WatchStore],
) -> None:
    first, second = stores
    now = time.time()
    entry, _ = first.enrol(SERVER, "p-1", infusion_at=None, source="api", now=now, reactivate=True)
    (claimed,) = first.claim("w", now, 60, 10)
    changes = [
        Change(
            new_change_id(), None, None, "possible", None, 10, now, {"webhook": {"n": 1}, "fhir": {"n": 1}}
        ),
        Change(new_change_id(), "possible", None, "met", 1, 11, now, {"webhook": {"n": 2}}),
    ]
    assert first.finish(claimed, "w", {"status": "met"}, changes, now=now)
    a = first.claim_outbox("a", now, 60, 2)
    b = second.claim_outbox("b", now, 60, 10)
    assert len(a) == 2 and len(b) == 1 and not {i.id for i in a} & {i.id for i in b}
    assert first.outbox_done(a[0], "a", now=now, sent=True)
    assert not second.outbox_done(a[1], "b", now=now, sent=True)  # not b's claim
    assert first.outbox_done(a[1], "a", now=now, sent=False, error="HTTP 503", retry_at=now + 30)
    assert first.delivery_problems() == {entry.id: f"{a[1].channel} notification retrying: HTTP 503"}
    assert second.claim_outbox("b", now + 10, 60, 10) == []  # b's claim still holds, a's retry not yet due
    (retry,) = second.claim_outbox("b", now + 31, 60, 10)
    assert retry.id == a[1].id and retry.attempts == 1 and retry.payload == {"n": 1}
    assert second.outbox_done(retry, "b", now=now, sent=False, error="HTTP 503", retry_at=None)
    states = sorted((o["channel"], o["state"], o["attempts"]) for o in first.outbox())
    assert states == [("fhir", "failed", 2), ("webhook", "pending", 0), ("webhook", "sent", 1)]
    counts = first.counts()
    assert counts["patients"] == {"met": 1} and counts["outbox"][("fhir", "failed")] == 1


def test_a_subscription_notification_during_an_evaluation_is_not_lost(
    stores: tuple[WatchStore, WatchStore],
) -> None:
    store, _ = stores
    now = time.time()
    store.enrol(SERVER, "p-1", infusion_at=None, source="api", now=now, reactivate=True)
    (entry,) = store.claim("w", now, 60, 10)
    store.mark_notified(entry.id, now + 1)  # arrives while the patient is being polled
    assert store.finish(entry, "w", {"last_polled": now, "next_due": now + 900, "force": False}, now=now)
    (again,) = store.claim("w", now + 2, 60, 10)
    assert again.notified and not again.force
    assert store.finish(again, "w", {"last_polled": now + 2, "next_due": now + 900}, now=now + 2)
    assert store.claim("w", now + 3, 60, 10) == []
