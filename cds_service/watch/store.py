"""The watch list's tables (SQLAlchemy Core; SQLite or PostgreSQL), with leases and a transactional outbox.

Three tables, created at start, in the service's database:

* ``watch_patients``: one row per (FHIR server, patient id): the infusion instant, where the enrolment came
  from, what the worklist shows (status, grade, day after infusion, a short ferritin series of numbers and
  times), the polling state (per-type ``_lastUpdated`` watermarks, next due time), the last problem, the
  Subscription, and a lease. No name, no identifier, no token, no FHIR resource.
* ``watch_changes``: one row per status or grade rise, keyed by its change id.
* ``watch_outbox``: one row per (change id, channel) to deliver: the webhook and, where configured, the
  FHIR write-back. Written in the same transaction as the change, so a change is never recorded without
  its notifications, and the unique key makes it impossible to queue one twice.

Several processes share the tables (gunicorn workers with their schedulers, ``cds-service watch --once``
runs, other instances):

* **claiming**: a process takes due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (other
  processes skip the locked rows instead of waiting) and sets a lease (owner, until) in the same
  transaction; on SQLite every write transaction starts with ``BEGIN IMMEDIATE``, so one writer at a time
  does the same. Rows under an unexpired lease are not claimed.
* **finishing**: the result is written with ``WHERE id = ? AND version = ? AND lease_owner = ?`` and bumps
  ``version``. A process whose lease ran out (a stalled FHIR server) and was overtaken writes nothing, and
  neither its change nor its notifications exist. So a change is recorded, and notified, once.
* **delivering**: outbox rows are claimed the same way; delivery is at least once (a crash between the
  receiver's answer and the ``sent`` mark repeats it) and receivers de-duplicate by change id.

Times are epoch seconds (wall clock).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()
patients_table = Table(
    "watch_patients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", String(32), nullable=False, unique=True),  # random: links name this, not the patient
    Column("fhir_server", String(512), nullable=False),  # normalized base URL
    Column("patient_id", String(64), nullable=False),
    Column("infusion_at", Double),
    Column("source", String(8), nullable=False),  # hook | api | list
    Column("active", Boolean, nullable=False, index=True),
    Column("left_reason", String(32)),
    Column("left_at", Double),
    Column("enrolled_at", Double, nullable=False),
    Column("status", String(16)),
    Column("grade", Integer),
    Column("day_post_infusion", Integer),
    Column("ferritin", Text),  # JSON [[epoch, ng/mL], ...]: numbers and times only
    Column("evaluated_at", Double),  # the instant evaluated
    Column("last_evaluated", Double),  # when the evaluation ran
    Column("evaluations", Integer, nullable=False, default=0),
    Column("last_change", Double),
    Column("change_from", String(32)),  # "possible" / "met 1": what the last change rose from
    Column("last_polled", Double),
    Column("next_due", Double, nullable=False, index=True),
    Column(
        "force", Boolean, nullable=False, default=False
    ),  # evaluate at the next poll (new enrolment, etc.)
    Column("notified_at", Double),  # the last Subscription notification (a poll started before it is stale)
    Column("watermarks", Text),  # JSON {type: {"at": lastUpdated, "keys": [...]}}
    Column("problem", String(160)),
    Column("problem_since", Double),
    Column("failures", Integer, nullable=False, default=0),
    Column("subscription_id", String(64)),
    Column("subscription_state", String(16)),
    Column("subscription_token", String(64), unique=True),
    Column("subscription_secret_hash", String(64)),
    Column("lease_owner", String(64)),
    Column("lease_until", Double),
    Column("version", Integer, nullable=False, default=0),
    UniqueConstraint("fhir_server", "patient_id", name="uq_watch_patient"),
)
changes_table = Table(
    "watch_changes",
    metadata,
    Column("change_id", String(36), primary_key=True),
    Column("patient_row", Integer, nullable=False, index=True),
    Column("from_status", String(16)),
    Column("from_grade", Integer),
    Column("to_status", String(16), nullable=False),
    Column("to_grade", Integer),
    Column("day_post_infusion", Integer),
    Column("evaluated_at", Double, nullable=False),
    Column("created_at", Double, nullable=False),
)
outbox_table = Table(
    "watch_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("change_id", String(36), nullable=False),
    Column("channel", String(16), nullable=False),  # webhook | fhir
    Column("patient_row", Integer, nullable=False, index=True),
    Column("payload", Text, nullable=False),
    Column("state", String(8), nullable=False, index=True),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Double, nullable=False),
    Column("last_error", String(64)),
    Column("created_at", Double, nullable=False),
    Column("sent_at", Double),
    Column("lease_owner", String(64)),
    Column("lease_until", Double),
    UniqueConstraint("change_id", "channel", name="uq_watch_outbox_change"),
)
LEFT_RETENTION_S = 30 * 86400.0  # rows of patients who left are kept this long (no re-enrolment by hooks)


@dataclass(frozen=True, slots=True)
class WatchEntry:
    """One watched patient as stored."""

    id: int
    entry_id: str
    fhir_server: str
    patient_id: str
    infusion_at: float | None
    source: str
    active: bool
    left_reason: str | None
    enrolled_at: float
    status: str | None
    grade: int | None
    day_post_infusion: int | None
    ferritin: tuple[tuple[float, float], ...]
    evaluated_at: float | None
    last_evaluated: float | None
    evaluations: int
    last_change: float | None
    change_from: str | None
    last_polled: float | None
    next_due: float
    force: bool
    notified_at: float | None
    watermarks: Mapping[str, Any]
    problem: str | None
    problem_since: float | None
    failures: int
    subscription_id: str | None
    subscription_state: str | None
    subscription_token: str | None
    subscription_secret_hash: str | None
    version: int

    @property
    def notified(self) -> bool:
        """A Subscription notification arrived since the last poll started."""
        return self.notified_at is not None and (
            self.last_polled is None or self.notified_at >= self.last_polled
        )


@dataclass(frozen=True, slots=True)
class Change:
    """A rise of the IEC-HS status or grade, and the notifications it needs (channel -> payload)."""

    change_id: str
    from_status: str | None
    from_grade: int | None
    to_status: str
    to_grade: int | None
    day_post_infusion: int | None
    evaluated_at: float
    notifications: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    change_id: str
    channel: str
    patient_row: int
    payload: Mapping[str, Any]
    attempts: int


def new_change_id() -> str:
    return str(uuid.uuid4())


class WatchStore:
    """The watch tables. On SQLite behind their own engine (every transaction is BEGIN IMMEDIATE); on
    PostgreSQL on `shared` (the service's engine) when given, else their own."""

    def __init__(self, database_url: str, shared: Engine | None = None) -> None:
        url = make_url(database_url)
        self.backend = url.get_backend_name()
        if self.backend == "sqlite":
            if url.database not in (None, "", ":memory:"):
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        elif shared is not None:
            self.engine = shared
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        """Drop pooled connections (after a fork)."""
        self.engine.dispose(close=False)

    # ------------------------------------------------------------------ enrolment

    def enrol(
        self,
        fhir_server: str,
        patient_id: str,
        *,
        infusion_at: float | None,
        source: str,
        now: float,
        reactivate: bool,
    ) -> tuple[WatchEntry, bool]:
        """Add the patient (or update the infusion of a watched one); returns the row and whether it is newly
        watched. A patient who left is watched again when `reactivate` (an explicit request), or when a hook
        shows another infusion than the one watched before."""
        table = patients_table
        key = (table.c.fhir_server == fhir_server) & (table.c.patient_id == patient_id)
        with self.engine.begin() as connection:
            row = self._locked_one(connection, key)
            if row is None:
                connection.execute(
                    insert(table).values(
                        entry_id=secrets.token_urlsafe(18),
                        fhir_server=fhir_server,
                        patient_id=patient_id,
                        infusion_at=infusion_at,
                        source=source,
                        active=True,
                        enrolled_at=now,
                        next_due=now,
                        force=True,
                        evaluations=0,
                        failures=0,
                        version=0,
                    )
                )
                created = self._locked_one(connection, key)
                assert created is not None
                return created, True
            new_infusion = infusion_at is not None and row.infusion_at != infusion_at
            values: dict[str, Any] = {}
            if new_infusion:
                values["infusion_at"] = infusion_at
            became_active = not row.active and (reactivate or new_infusion)
            if became_active:
                values |= {
                    "active": True,
                    "left_reason": None,
                    "left_at": None,
                    "source": source,
                    "enrolled_at": now,
                    "next_due": now,
                    "force": True,
                    "status": None,
                    "grade": None,
                    "problem": None,
                    "problem_since": None,
                    "failures": 0,
                }
            if values:
                values["version"] = row.version + 1
                connection.execute(update(table).where(table.c.id == row.id).values(**values))
                row = self._locked_one(connection, key)
                assert row is not None
            return row, became_active

    def leave(self, row_id: int, reason: str, now: float) -> WatchEntry | None:
        """Stop watching (the row stays, inactive, so a hook call does not enrol the patient again)."""
        table = patients_table
        with self.engine.begin() as connection:
            connection.execute(
                update(table)
                .where(table.c.id == row_id, table.c.active.is_(True))
                .values(
                    active=False,
                    left_reason=reason,
                    left_at=now,
                    lease_owner=None,
                    lease_until=None,
                    version=table.c.version + 1,
                )
            )
            return self._locked_one(connection, table.c.id == row_id)

    def find(self, fhir_server: str, patient_id: str) -> WatchEntry | None:
        key = (patients_table.c.fhir_server == fhir_server) & (patients_table.c.patient_id == patient_id)
        with self.engine.begin() as connection:
            return self._one(connection, key)

    def by_entry_id(self, entry_id: str) -> WatchEntry | None:
        with self.engine.begin() as connection:
            return self._one(connection, patients_table.c.entry_id == entry_id)

    def by_subscription_token(self, token: str) -> WatchEntry | None:
        with self.engine.begin() as connection:
            return self._one(connection, patients_table.c.subscription_token == token)

    def active(self, servers: Iterable[str] | None = None) -> list[WatchEntry]:
        """Every watched patient (optionally only on `servers`)."""
        query = select(patients_table).where(patients_table.c.active.is_(True))
        if servers is not None:
            query = query.where(patients_table.c.fhir_server.in_(list(servers)))
        with self.engine.begin() as connection:
            return [_entry(row._mapping) for row in connection.execute(query.order_by(patients_table.c.id))]

    def with_source(self, source: str) -> list[WatchEntry]:
        query = select(patients_table).where(
            patients_table.c.active.is_(True), patients_table.c.source == source
        )
        with self.engine.begin() as connection:
            return [_entry(row._mapping) for row in connection.execute(query)]

    # ------------------------------------------------------------------ claiming and finishing

    def claim(
        self, owner: str, now: float, lease_s: float, limit: int, *, cycle_start: float | None = None
    ) -> list[WatchEntry]:
        """Lease up to `limit` rows: those due now, or (`cycle_start` given: a full cycle) every active row
        not polled since the cycle started. Rows leased by another process are skipped, never waited on."""
        table = patients_table
        free = or_(table.c.lease_until.is_(None), table.c.lease_until < now)
        if cycle_start is None:
            notified = table.c.notified_at.is_not(None) & or_(
                table.c.last_polled.is_(None), table.c.notified_at >= table.c.last_polled
            )
            due = or_(table.c.next_due <= now, notified)
        else:
            due = or_(table.c.last_polled.is_(None), table.c.last_polled < cycle_start)
        lease = {"lease_owner": owner, "lease_until": now + lease_s, "version": table.c.version + 1}
        with self.engine.begin() as connection:
            rows = _lease(
                connection,
                table,
                (table.c.active.is_(True), free, due),
                (table.c.next_due, table.c.id),
                limit,
                lease,
            )
            return [_entry(row._mapping) for row in rows]

    def finish(
        self,
        entry: WatchEntry,
        owner: str,
        values: Mapping[str, Any],
        changes: Sequence[Change] = (),
        *,
        now: float,
    ) -> bool:
        """Write a claimed row's outcome, its changes and their outbox rows in one transaction, and release
        the lease. False (and nothing written) when the lease was lost to another process."""
        table = patients_table
        with self.engine.begin() as connection:
            result = connection.execute(
                update(table)
                .where(table.c.id == entry.id, table.c.version == entry.version, table.c.lease_owner == owner)
                .values(**values, lease_owner=None, lease_until=None, version=entry.version + 1)
                .returning(table.c.id)
            )
            if result.first() is None:
                connection.rollback()
                return False
            for change in changes:
                connection.execute(
                    insert(changes_table).values(
                        change_id=change.change_id,
                        patient_row=entry.id,
                        from_status=change.from_status,
                        from_grade=change.from_grade,
                        to_status=change.to_status,
                        to_grade=change.to_grade,
                        day_post_infusion=change.day_post_infusion,
                        evaluated_at=change.evaluated_at,
                        created_at=now,
                    )
                )
                for channel, payload in change.notifications.items():
                    connection.execute(
                        insert(outbox_table).values(
                            change_id=change.change_id,
                            channel=channel,
                            patient_row=entry.id,
                            payload=json.dumps(payload, separators=(",", ":")),
                            state="pending",
                            attempts=0,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
        return True

    def mark_notified(self, row_id: int, now: float) -> None:
        """A Subscription notification: the patient is due, and its next poll evaluates. `finish` never
        writes this column, so a notification that arrives while the patient is being evaluated (the poll
        started before it) makes the patient due again instead of being lost."""
        with self.engine.begin() as connection:
            connection.execute(
                update(patients_table).where(patients_table.c.id == row_id).values(notified_at=now)
            )

    def prepare_subscription(self, row_id: int, token: str, secret_hash: str) -> None:
        """Record a Subscription's endpoint token and secret before the server is asked to create it (its
        handshake may come first). Not a claim's result: the version stays, the claim's write follows."""
        with self.engine.begin() as connection:
            connection.execute(
                update(patients_table)
                .where(patients_table.c.id == row_id)
                .values(subscription_token=token, subscription_secret_hash=secret_hash)
            )

    # ------------------------------------------------------------------ outbox

    def claim_outbox(self, owner: str, now: float, lease_s: float, limit: int) -> list[OutboxItem]:
        table = outbox_table
        free = or_(table.c.lease_until.is_(None), table.c.lease_until < now)
        where = (table.c.state == "pending", table.c.next_attempt_at <= now, free)
        lease = {"lease_owner": owner, "lease_until": now + lease_s}
        with self.engine.begin() as connection:
            rows = _lease(connection, table, where, (table.c.id,), limit, lease)
            return [
                OutboxItem(
                    id=row.id,
                    change_id=row.change_id,
                    channel=row.channel,
                    patient_row=row.patient_row,
                    payload=json.loads(row.payload),
                    attempts=row.attempts,
                )
                for row in rows
            ]

    def outbox_done(
        self,
        item: OutboxItem,
        owner: str,
        *,
        now: float,
        sent: bool,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> bool:
        """Record one delivery attempt: sent, failed for now (retry at `retry_at`) or given up (None)."""
        table = outbox_table
        values: dict[str, Any] = {"attempts": item.attempts + 1, "lease_owner": None, "lease_until": None}
        if sent:
            values |= {"state": "sent", "sent_at": now, "last_error": None}
        elif retry_at is not None:
            values |= {"last_error": (error or "")[:64], "next_attempt_at": retry_at}
        else:
            values |= {"state": "failed", "last_error": (error or "")[:64]}
        with self.engine.begin() as connection:
            result = connection.execute(
                update(table)
                .where(table.c.id == item.id, table.c.lease_owner == owner, table.c.state == "pending")
                .values(**values)
                .returning(table.c.id)
            )
            return result.first() is not None

    def delivery_problems(self) -> dict[int, str]:
        """Patient rows whose notifications are failing: the latest error of a retried or given-up one."""
        table = outbox_table
        query = (
            select(table.c.patient_row, table.c.channel, table.c.state, table.c.last_error)
            .where(or_(table.c.state == "failed", (table.c.state == "pending") & (table.c.attempts > 0)))
            .order_by(table.c.id)
        )
        problems: dict[int, str] = {}
        with self.engine.begin() as connection:
            for row in connection.execute(query):
                verb = "gave up" if row.state == "failed" else "retrying"
                problems[row.patient_row] = f"{row.channel} notification {verb}: {row.last_error or 'failed'}"
        return problems

    def outbox(self, change_id: str | None = None) -> list[dict[str, Any]]:
        """Outbox rows as dicts (tests, operators)."""
        query = select(outbox_table).order_by(outbox_table.c.id)
        if change_id is not None:
            query = query.where(outbox_table.c.change_id == change_id)
        with self.engine.begin() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def changes(self) -> list[dict[str, Any]]:
        with self.engine.begin() as connection:
            query = select(changes_table).order_by(changes_table.c.created_at, changes_table.c.change_id)
            return [dict(row._mapping) for row in connection.execute(query)]

    # ------------------------------------------------------------------ metrics and housekeeping

    def counts(self) -> dict[str, Any]:
        """Patients by status and with a problem, outbox rows by channel and state, evaluations so far."""
        p, o = patients_table, outbox_table
        with self.engine.begin() as connection:
            by_status = {
                (row.status or "none"): row.n
                for row in connection.execute(
                    select(p.c.status, func.count().label("n"))
                    .where(p.c.active.is_(True))
                    .group_by(p.c.status)
                )
            }
            problems = connection.execute(
                select(func.count()).where(p.c.active.is_(True), p.c.problem.is_not(None))
            ).scalar_one()
            evaluations = connection.execute(select(func.coalesce(func.sum(p.c.evaluations), 0))).scalar_one()
            outbox = {
                (row.channel, row.state): row.n
                for row in connection.execute(
                    select(o.c.channel, o.c.state, func.count().label("n")).group_by(o.c.channel, o.c.state)
                )
            }
        return {"patients": by_status, "problems": problems, "evaluations": evaluations, "outbox": outbox}

    def purge_left(self, now: float) -> int:
        """Delete rows of patients who left more than LEFT_RETENTION_S ago."""
        table = patients_table
        with self.engine.begin() as connection:
            result = connection.execute(
                table.delete().where(table.c.active.is_(False), table.c.left_at < now - LEFT_RETENTION_S)
            )
            return int(result.rowcount or 0)

    # ------------------------------------------------------------------ helpers

    def _locked_one(self, connection: Connection, where: Any) -> WatchEntry | None:
        row = connection.execute(select(patients_table).where(where).with_for_update()).first()
        return None if row is None else _entry(row._mapping)

    def _one(self, connection: Connection, where: Any) -> WatchEntry | None:
        row = connection.execute(select(patients_table).where(where)).first()
        return None if row is None else _entry(row._mapping)


def _entry(row: Mapping[str, Any] | RowMapping) -> WatchEntry:
    ferritin = json.loads(row["ferritin"]) if row["ferritin"] else []
    return WatchEntry(
        id=row["id"],
        entry_id=row["entry_id"],
        fhir_server=row["fhir_server"],
        patient_id=row["patient_id"],
        infusion_at=row["infusion_at"],
        source=row["source"],
        active=bool(row["active"]),
        left_reason=row["left_reason"],
        enrolled_at=row["enrolled_at"],
        status=row["status"],
        grade=row["grade"],
        day_post_infusion=row["day_post_infusion"],
        ferritin=tuple((float(t), float(v)) for t, v in ferritin),
        evaluated_at=row["evaluated_at"],
        last_evaluated=row["last_evaluated"],
        evaluations=row["evaluations"] or 0,
        last_change=row["last_change"],
        change_from=row["change_from"],
        last_polled=row["last_polled"],
        next_due=row["next_due"],
        force=bool(row["force"]),
        notified_at=row["notified_at"],
        watermarks=json.loads(row["watermarks"]) if row["watermarks"] else {},
        problem=row["problem"],
        problem_since=row["problem_since"],
        failures=row["failures"] or 0,
        subscription_id=row["subscription_id"],
        subscription_state=row["subscription_state"],
        subscription_token=row["subscription_token"],
        subscription_secret_hash=row["subscription_secret_hash"],
        version=row["version"],
    )


def _lease(
    connection: Connection,
    table: Table,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[ColumnElement[Any]],
    limit: int,
    lease: Mapping[str, Any],
) -> list[Row[Any]]:
    """Lease up to `limit` rows matching `where` (in `order`): rows another process holds locked are skipped,
    never waited on (SKIP LOCKED; SQLite has one writer anyway); the leased rows as now written."""
    candidates = (
        select(table.c.id).where(*where).order_by(*order).limit(limit).with_for_update(skip_locked=True)
    )
    ids = [row.id for row in connection.execute(candidates)]
    if not ids:
        return []
    connection.execute(update(table).where(table.c.id.in_(ids)).values(**lease))
    return list(connection.execute(select(table).where(table.c.id.in_(ids)).order_by(*order)))


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue the BEGIN (IMMEDIATE) instead of pysqlite's deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a queued notification must survive a crash
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
