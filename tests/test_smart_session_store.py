"""The SMART session stores against real databases: SQLite (a file, through the service's own engine setup)
and PostgreSQL (a throwaway server, tests/plugins/postgres.py), plus the in-memory store for the rules all
stores share. A settable clock drives expiry; nothing is mocked.

Checked: every field survives a round trip; nothing secret is readable in the tables or the SQLite files;
idle TTL, token expiry and maximum age on read; the state / PKCE verifier is single use, also when
callbacks race from two engines; rotation, deletion, purge; the key setting.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, func, select, text, update

from cds_service.errors import ConfigurationError
from cds_service.hooks.feedback import FeedbackStore
from cds_service.smart.appcontext import AppContext
from cds_service.smart.codec import SessionCipher
from cds_service.smart.dbstore import (
    PURGE_INTERVAL_S,
    SqlSessionStore,
    key_hash,
    pending_table,
    sessions_table,
)
from cds_service.smart.memstore import MemorySessionStore
from cds_service.smart.sessionkey import KEY_VARIABLE, session_cipher
from cds_service.smart.sessions import (
    MAX_PENDING,
    PENDING_TTL_S,
    LaunchContext,
    PendingAuthorization,
    SessionStore,
    SmartSession,
)
from cds_service.smart.web import smart_state
from cds_service.web.app import create_app

PATIENT = "store-test-patient-5f1c"
FHIR_USER = "Practitioner/store-test-user"
ISS = "https://ehr.example.org/fhir"
TTL_S = 100.0
MAX_AGE_S = 1000.0


@dataclass
class Clock:
    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """One store kind: builds stores on the same database (or memory) with a shared settable clock."""

    kind: str
    clock: Clock
    url: str | None = None
    engines: list[Engine] = field(default_factory=list)
    cipher: SessionCipher = field(default_factory=SessionCipher.generate)
    _memory: MemorySessionStore | None = None

    def engine(self) -> Engine:
        """A new engine on the database, set up like the service's (a second one plays another worker)."""
        assert self.url is not None
        engine = FeedbackStore(self.url).engine
        self.engines.append(engine)
        return engine

    def store(self, *, cipher: SessionCipher | None = None, engine: Engine | None = None) -> SessionStore:
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemorySessionStore(TTL_S, 1000, max_age_s=MAX_AGE_S, clock=self.clock)
            return self._memory
        return SqlSessionStore(
            engine or (self.engines[0] if self.engines else self.engine()),
            cipher or self.cipher,
            ttl_s=TTL_S,
            max_age_s=MAX_AGE_S,
            clock=self.clock,
        )

    def rows(self) -> list[dict[str, Any]]:
        """Every row of both tables, raw."""
        with self.engines[0].connect() as connection:
            return [
                dict(row._mapping)
                for table in (sessions_table, pending_table)
                for row in connection.execute(select(table))
            ]

    def count(self, table: Any) -> int:
        with self.engines[0].connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def database_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    if kind == "postgresql":
        return str(request.getfixturevalue("postgres_database_url"))
    return None


def harness_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(kind, Clock(), database_url(kind, request, tmp_path))
    try:
        yield harness
    finally:
        for engine in harness.engines:
            engine.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from harness_for(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from harness_for(request.param, request, tmp_path)


def sign_in(
    store: SessionStore, clock: Clock, *, expires_in: float | None = 600.0
) -> tuple[SmartSession, str]:
    """A session after a completed launch, with a fresh access token (returned too)."""
    session = store.create()
    token = "at-" + secrets.token_urlsafe(32)
    session.context = LaunchContext(
        iss=ISS,
        access_token=token,
        expires_at=None if expires_in is None else clock() + expires_in,
        scopes=frozenset({"launch", "patient/Observation.rs", "patient/Patient.rs"}),
        patient=PATIENT,
        kind="ehr",
        need_patient_banner=False,
        patient_locked=True,
        encounter="store-test-encounter",
        app_context=AppContext(
            present=True,
            at=datetime(2026, 3, 15, 20, tzinfo=UTC),
            view="trends",
            patient=PATIENT,
            notes=("a note",),
        ),
        fhir_user=FHIR_USER,
    )
    session.at_override = datetime(2026, 3, 14, 8, 30, tzinfo=UTC)
    store.save(session)
    return session, token


def pending(clock: Clock) -> PendingAuthorization:
    return PendingAuthorization(
        state=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(64),
        iss=ISS,
        token_endpoint="https://ehr.example.org/token",
        issuer="https://ehr.example.org",
        jwks_uri="https://ehr.example.org/jwks",
        kind="ehr",
        created=clock(),
    )


# ------------------------------------------------------------------ every store


def test_round_trip_keeps_every_field(any_store: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = any_store.store()
    session, token = sign_in(store, any_store.clock)
    loaded = store.get(session.id)
    assert loaded == session and loaded is not None and loaded.context is not None
    assert loaded.context.access_token == token and loaded.context.app_context.notes == ("a note",)
    assert token not in repr(loaded) and PATIENT not in repr(loaded) and session.id not in repr(loaded)
    assert token not in caplog.text and PATIENT not in caplog.text
    assert store.get("x" + session.id) is None


def test_idle_ttl_restarts_on_each_read(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    session, _ = sign_in(store, clock, expires_in=None)
    for _ in range(3):
        clock.advance(TTL_S * 0.6)
        assert store.get(session.id) is not None  # 180 s after sign-in, never idle for 100 s
    clock.advance(TTL_S + 1)
    assert store.get(session.id) is None


def test_token_expiry_is_enforced_on_read(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    session, token = sign_in(store, clock, expires_in=30)
    clock.advance(29)
    live = store.get(session.id)
    assert live is not None and live.context is not None and live.context.access_token == token
    clock.advance(2)
    ended = store.get(session.id)
    assert ended is not None and ended.context is not None  # once more, to say "your authorization expired"
    assert ended.context.access_token == "" and ended.context.expired(clock())
    assert store.get(session.id) is None  # then gone


def test_maximum_age_ends_a_session_whose_token_does_not_expire(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    session, _ = sign_in(store, clock, expires_in=None)
    while clock() + TTL_S / 2 < session.created + MAX_AGE_S:
        clock.advance(TTL_S / 2)
        assert store.get(session.id) is not None
    clock.advance(TTL_S / 2)
    ended = store.get(session.id)
    assert ended is not None and ended.context is not None and ended.context.access_token == ""
    assert ended.context.expired(clock()) and store.get(session.id) is None


def test_a_pending_authorization_is_used_once_and_only_by_its_session(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    mine, other = store.create(), store.create()
    started = pending(clock)
    store.add_pending(mine.id, started)
    assert store.take_pending(other.id, started.state) is None  # a callback in another browser
    assert store.take_pending(mine.id, "forged-" + started.state) is None
    assert store.take_pending(mine.id, started.state) == started
    assert store.take_pending(mine.id, started.state) is None  # replay


def test_pending_authorizations_expire_and_are_capped_per_session(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    session = store.create()
    late = pending(clock)
    store.add_pending(session.id, late)
    clock.advance(PENDING_TTL_S + 1)
    assert store.take_pending(session.id, late.state) is None
    started = []
    for _ in range(MAX_PENDING + 1):
        clock.advance(1)
        started.append(pending(clock))
        store.add_pending(session.id, started[-1])
    assert store.take_pending(session.id, started[0].state) is None  # the oldest was dropped
    assert all(store.take_pending(session.id, p.state) == p for p in started[1:])


def test_rotate_moves_the_session_and_its_pending_authorizations(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    session, token = sign_in(store, clock)
    other_tab = pending(clock)
    store.add_pending(session.id, other_tab)
    old_id, old_csrf = session.id, session.csrf
    rotated = store.rotate(session)
    assert rotated.id != old_id and rotated.csrf != old_csrf
    assert store.get(old_id) is None
    loaded = store.get(rotated.id)
    assert loaded is not None and loaded.context is not None and loaded.context.access_token == token
    assert store.take_pending(old_id, other_tab.state) is None
    assert store.take_pending(rotated.id, other_tab.state) == other_tab


def test_delete_drops_everything_and_a_late_save_does_not_resurrect(any_store: Harness) -> None:
    store, clock = any_store.store(), any_store.clock
    session, _ = sign_in(store, clock)
    started = pending(clock)
    store.add_pending(session.id, started)
    store.delete(session.id)
    store.save(session)  # e.g. a concurrent request of the same browser finishing after logout
    assert store.get(session.id) is None and store.take_pending(session.id, started.state) is None


# ------------------------------------------------------------------ database stores


def test_nothing_secret_is_readable_at_rest(db: Harness) -> None:
    store, clock = db.store(), db.clock
    session, token = sign_in(store, clock)
    started = pending(clock)
    store.add_pending(session.id, started)
    secrets_in_clear = {
        "token": token,
        "patient": PATIENT,
        "fhirUser": FHIR_USER,
        "verifier": started.code_verifier,
        "state": started.state,
        "session id": session.id,
        "csrf": session.csrf,
    }
    rows = db.rows()
    assert len(rows) == 2
    dump = "\n".join(
        bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview) else str(value)
        for row in rows
        for value in row.values()
    )
    for name, value in secrets_in_clear.items():
        assert value not in dump, name
    if db.kind == "sqlite":
        assert db.url is not None
        path = Path(db.url.removeprefix("sqlite:///"))
        files = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        for name, value in secrets_in_clear.items():
            assert value.encode() not in files, name
    payload = next(bytes(r["payload"]) for r in rows if "id_hash" in r)
    assert token in str(db.cipher.open(payload))  # the payload is the session, encrypted with the key


def test_another_key_reads_nothing_and_a_rotated_key_list_reads_old_sessions(db: Harness) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    writer = db.store(cipher=SessionCipher([old_key]))
    session, token = sign_in(writer, db.clock)
    rotated = db.store(cipher=SessionCipher([new_key, old_key])).get(session.id)
    assert rotated is not None and rotated.context is not None and rotated.context.access_token == token
    assert db.store(cipher=SessionCipher([new_key])).get(session.id) is None  # and the row is dropped
    assert writer.get(session.id) is None and db.count(sessions_table) == 0


def test_a_payload_moved_to_another_row_does_not_open(db: Harness) -> None:
    store = db.store()
    victim, _ = sign_in(store, db.clock)
    attacker = store.create()
    with db.engines[0].begin() as connection:
        stolen = connection.execute(
            select(sessions_table.c.payload).where(sessions_table.c.id_hash == key_hash(victim.id))
        ).scalar_one()
        connection.execute(
            update(sessions_table)
            .where(sessions_table.c.id_hash == key_hash(attacker.id))
            .values(payload=stolen)
        )
    assert store.get(attacker.id) is None and store.get(victim.id) is not None


def race(stores: list[SessionStore], session_id: str, state: str, callers: int = 8) -> list[bool]:
    """`callers` threads, spread over `stores`, take the same state at once; who got it."""
    barrier = threading.Barrier(callers)
    results: list[bool] = []

    def callback(store: SessionStore) -> None:
        barrier.wait()
        results.append(store.take_pending(session_id, state) is not None)

    threads = [threading.Thread(target=callback, args=(stores[i % len(stores)],)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_callbacks_from_two_workers_take_a_state_once(db: Harness) -> None:
    workers = [db.store(engine=db.engine()), db.store(engine=db.engine())]  # two engines, like two processes
    session = workers[0].create()
    for _ in range(5):
        started = pending(db.clock)
        workers[1].add_pending(session.id, started)
        assert sorted(race(workers, session.id, started.state)) == [False] * 7 + [True]


def test_idle_and_ended_rows_are_purged(db: Harness) -> None:
    store, clock = db.store(), db.clock
    for _ in range(3):
        sign_in(store, clock)
        store.add_pending(store.create().id, pending(clock))
    assert db.count(sessions_table) == 6 and db.count(pending_table) == 3
    clock.advance(max(TTL_S, PENDING_TTL_S, PURGE_INTERVAL_S) + 1)
    kept = store.create()  # at most once a minute per process, a write also purges
    assert db.count(sessions_table) == 1 and db.count(pending_table) == 0
    assert store.get(kept.id) is not None
    clock.advance(TTL_S + 1)
    assert isinstance(store, SqlSessionStore) and store.purge() == 1


def test_tables_are_created_in_the_service_database_at_start(tmp_path: Path) -> None:
    database = tmp_path / "service.sqlite3"
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "DATABASE_URL": f"sqlite:///{database}",
            "SMART_SESSION_KEY": Fernet.generate_key().decode(),
        }
    )
    store = smart_state(app).store
    assert isinstance(store, SqlSessionStore)
    with store.engine.connect() as connection:
        tables = set(
            connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars()
        )
    assert {"smart_sessions", "smart_pending_authorizations"} <= tables
    assert str(store.engine.url) == f"sqlite:///{database}"


def test_a_plugged_store_is_used_even_while_empty(tmp_path: Path) -> None:
    plugged = MemorySessionStore(TTL_S, 10)
    assert len(plugged) == 0 and not plugged  # falsy: the app must test for None, not truth
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}",
            "SMART_SESSION_STORE": plugged,
        }
    )
    assert smart_state(app).store is plugged


# ------------------------------------------------------------------ the key


def test_a_bad_key_stops_the_app_without_echoing_it(tmp_path: Path) -> None:
    bad = "not-a-fernet-key-" + secrets.token_hex(8)
    with pytest.raises(ConfigurationError) as error:
        create_app(
            {
                "CDS_DEV_MODE": True,
                "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}",
                "SMART_SESSION_KEY": bad,
            }
        )
    assert KEY_VARIABLE in str(error.value) and bad not in str(error.value)


@pytest.mark.parametrize(
    ("dev_mode", "level"),
    [(True, logging.INFO), (False, logging.ERROR)],
    ids=["development", "production"],
)
def test_without_a_key_one_is_generated_and_the_start_log_says_so(
    dev_mode: bool, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cds_service.smart")
    cipher = session_cipher({}, dev_mode, environ={})
    assert cipher.open(cipher.seal({"a": 1})) == {"a": 1}
    assert [(r.levelno, KEY_VARIABLE in r.getMessage()) for r in caplog.records] == [(level, True)]


def test_keys_come_from_the_environment_and_rotate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cds_service.smart")
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = session_cipher({}, False, environ={KEY_VARIABLE: old}).seal({"v": 1})
    rotated = session_cipher({}, False, environ={KEY_VARIABLE: f"{new}, {old}"})
    assert rotated.open(sealed) == {"v": 1} and not caplog.records
    assert session_cipher({}, False, environ={KEY_VARIABLE: new}).open(sealed) is None
