"""Durable, idempotent storage of CDS Hooks feedback (SQLAlchemy 2 Core; SQLite or PostgreSQL).

A feedback item is identified by (service id, card uuid, outcome, suggestion ids, outcome timestamp): a
client may resend the same item, and the unique constraint turns the repeat into a no-op. Suggestion ids
are stored as a sorted JSON array; timestamps are normalised to UTC with microseconds, so
`...24.485Z` and `...24.485000+00:00` are the same key. The override comment is stored (it is part of the
feedback) but never logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})")
metadata = MetaData()
feedback_table = Table(
    "cds_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service_id", String(128), nullable=False),
    Column("card_uuid", String(256), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("suggestion_ids", Text, nullable=False),  # canonical JSON array of sorted ids
    Column("outcome_timestamp", String(32), nullable=False),
    Column("override_system", Text),
    Column("override_code", String(256)),
    Column("override_display", Text),
    Column("override_comment", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "service_id",
        "card_uuid",
        "outcome",
        "suggestion_ids",
        "outcome_timestamp",
        name="uq_cds_feedback_item",
    ),
)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One stored feedback item."""

    service_id: str
    card_uuid: str
    outcome: str
    suggestion_ids: tuple[str, ...]
    outcome_timestamp: str
    override_system: str | None = None
    override_code: str | None = None
    override_display: str | None = None
    override_comment: str | None = None


def normalize_timestamp(value: str) -> str:
    """RFC 3339 -> `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC (fractions beyond microseconds are truncated)."""
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    head, fraction, offset = match.groups()
    offset = "+00:00" if offset in {"Z", "z"} else offset
    parsed = datetime.fromisoformat(f"{head}.{(fraction or '')[:6].ljust(6, '0')}{offset}")
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_from_item(service_id: str, item: Mapping[str, Any]) -> FeedbackRecord:
    """A schema-valid feedback item -> a record (suggestion ids sorted and de-duplicated)."""
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    suggestions = sorted({str(s["id"]) for s in item.get("acceptedSuggestions", [])})
    return FeedbackRecord(
        service_id=service_id,
        card_uuid=str(item["card"]),
        outcome=str(item["outcome"]),
        suggestion_ids=tuple(suggestions),
        outcome_timestamp=normalize_timestamp(str(item["outcomeTimestamp"])),
        override_system=reason.get("system"),
        override_code=reason.get("code"),
        override_display=reason.get("display"),
        override_comment=(item.get("overrideReason") or {}).get("userComment"),
    )


class FeedbackStore:
    """Feedback table behind one SQLAlchemy engine; tables are created at construction."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(
            url, pool_pre_ping=True, **_engine_options(url.get_backend_name())
        )
        if url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def add(self, records: Iterable[FeedbackRecord], received_at: datetime | None = None) -> int:
        """Store records in one transaction; returns how many were new (repeats are ignored)."""
        rows = [_row(r, received_at or datetime.now(UTC)) for r in records]
        if not rows:
            return 0
        # RETURNING counts the rows really inserted (rowcount is not reliable across drivers).
        statement = _insert_ignoring_duplicates(self.engine.dialect.name).returning(feedback_table.c.id)
        with self.engine.begin() as connection:
            return sum(len(connection.execute(statement, row).all()) for row in rows)

    def all(self, service_id: str | None = None) -> list[FeedbackRecord]:
        """Every stored record (optionally of one service), oldest first."""
        query = select(feedback_table).order_by(feedback_table.c.id)
        if service_id is not None:
            query = query.where(feedback_table.c.service_id == service_id)
        with self.engine.connect() as connection:
            return [_record(dict(row._mapping)) for row in connection.execute(query)]

    def dispose(self) -> None:
        """Close pooled connections (after a fork, or at shutdown)."""
        self.engine.dispose(close=False)


def _engine_options(backend: str) -> dict[str, Any]:
    if backend == "sqlite":
        # check_same_thread: connections are pooled across the server's threads; timeout waits on locks.
        return {"connect_args": {"check_same_thread": False, "timeout": 15}}
    return {"pool_size": 5, "max_overflow": 5}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer across gunicorn workers
    cursor.execute("PRAGMA synchronous=FULL")  # feedback must survive a crash once acknowledged
    cursor.close()


def _insert_ignoring_duplicates(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(feedback_table).on_conflict_do_nothing(constraint="uq_cds_feedback_item")
    if dialect == "sqlite":
        return sqlite.insert(feedback_table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect!r} (sqlite or postgresql)")


def _row(record: FeedbackRecord, received_at: datetime) -> dict[str, Any]:
    return {
        "service_id": record.service_id,
        "card_uuid": record.card_uuid,
        "outcome": record.outcome,
        "suggestion_ids": json.dumps(list(record.suggestion_ids), separators=(",", ":")),
        "outcome_timestamp": record.outcome_timestamp,
        "override_system": record.override_system,
        "override_code": record.override_code,
        "override_display": record.override_display,
        "override_comment": record.override_comment,
        "received_at": received_at,
    }


def _record(row: Mapping[str, Any]) -> FeedbackRecord:
    return FeedbackRecord(
        service_id=row["service_id"],
        card_uuid=row["card_uuid"],
        outcome=row["outcome"],
        suggestion_ids=tuple(json.loads(row["suggestion_ids"])),
        outcome_timestamp=row["outcome_timestamp"],
        override_system=row["override_system"],
        override_code=row["override_code"],
        override_display=row["override_display"],
        override_comment=row["override_comment"],
    )
