"""The session store on the service's database (SQLAlchemy Core; SQLite or PostgreSQL), shared by every
gunicorn worker and every host using that database.

Two tables, created at start:

* ``smart_sessions``: one row per browser session, keyed by the SHA-256 of the session id (the cookie
  value itself is never stored, so reading the table does not yield usable cookies);
* ``smart_pending_authorizations``: one row per started authorization, keyed by the SHA-256 of its
  ``state`` and bound to its session's key.

The payloads (CSRF token, access token, patient, appContext, fhirUser, PKCE verifier, ...) are Fernet
tokens (cds_service.smart.codec); only key hashes and times are in clear. Times are epoch seconds.

* Reads restart the idle clock in the same statement (``UPDATE ... RETURNING``).
* A pending authorization is taken with ``DELETE ... RETURNING``: the database decides which of two
  concurrent callbacks gets it, so the ``state`` and its PKCE verifier are used once, across processes.
* Rows idle past the TTL or past their deadline are purged now and then (at most once a minute per
  process), and deleted when read.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    or_,
    select,
    update,
)

from cds_service.smart.codec import SessionCipher, open_pending, open_session, seal_pending, seal_session
from cds_service.smart.sessions import (
    MAX_PENDING,
    PendingAuthorization,
    SmartSession,
    deadline,
    new_secret,
    without_token,
)

PURGE_INTERVAL_S = 60.0
log = logging.getLogger("cds_service.smart")
metadata = MetaData()
sessions_table = Table(
    "smart_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 (hex) of the session id
    Column("payload", LargeBinary, nullable=False),  # Fernet token of the session document
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=False, index=True),
    Column("expires_at", Double, nullable=False, index=True),  # the absolute deadline
)
pending_table = Table(
    "smart_pending_authorizations",
    metadata,
    Column("state_hash", String(64), primary_key=True),  # SHA-256 (hex) of the state
    Column("session_hash", String(64), nullable=False, index=True),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)


def key_hash(secret: str) -> str:
    """The row key of a session id or state: 256 bits of random input, so a plain SHA-256 is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


class SqlSessionStore:
    """Sessions and pending authorizations in `engine`'s database; tables are created at construction."""

    def __init__(
        self,
        engine: Engine,
        cipher: SessionCipher,
        *,
        ttl_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self._cipher = cipher
        self._ttl_s = ttl_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._last_purge = float("-inf")
        self._purge_lock = threading.Lock()
        metadata.create_all(engine)

    # ------------------------------------------------------------------ sessions

    def create(self) -> SmartSession:
        session = SmartSession(created=self._clock())
        with self.engine.begin() as connection:
            self._insert(connection, session)
        self._maybe_purge()
        return session

    def get(self, session_id: str) -> SmartSession | None:
        now, row_key = self._clock(), key_hash(session_id)
        touch = (
            update(sessions_table)
            .where(sessions_table.c.id_hash == row_key, sessions_table.c.last_used_at > now - self._ttl_s)
            .values(last_used_at=now)
            .returning(sessions_table.c.payload, sessions_table.c.expires_at)
        )
        with self.engine.begin() as connection:
            row = connection.execute(touch).first()
            end = None if row is None else float(row.expires_at)
            if end is not None and end <= now:  # past the deadline: read once more, then gone
                self._delete(connection, row_key)
        self._maybe_purge()
        if row is None or end is None:
            return None
        session = open_session(self._cipher, row_key, session_id, row.payload)
        if session is None:  # another key, or tampered with
            log.warning("unreadable smart session dropped", extra={"event": "smart-session-unreadable"})
            self.delete(session_id)
            return None
        return without_token(session, end) if end <= now else session

    def save(self, session: SmartSession) -> None:
        row_key = key_hash(session.id)
        statement = (
            update(sessions_table)
            .where(sessions_table.c.id_hash == row_key)
            .values(
                payload=seal_session(self._cipher, row_key, session),
                last_used_at=self._clock(),
                expires_at=deadline(session, self._max_age_s),
            )
        )
        with self.engine.begin() as connection:
            connection.execute(statement)

    def rotate(self, session: SmartSession) -> SmartSession:
        old_key = key_hash(session.id)
        session.id, session.csrf, session.created = new_secret(), new_secret(), self._clock()
        with self.engine.begin() as connection:
            connection.execute(delete(sessions_table).where(sessions_table.c.id_hash == old_key))
            self._insert(connection, session)
            connection.execute(
                update(pending_table)
                .where(pending_table.c.session_hash == old_key)
                .values(session_hash=key_hash(session.id))
            )
        return session

    def delete(self, session_id: str) -> None:
        with self.engine.begin() as connection:
            self._delete(connection, key_hash(session_id))

    # ------------------------------------------------------------------ pending authorizations

    def add_pending(self, session_id: str, pending: PendingAuthorization) -> None:
        session_key, state_key = key_hash(session_id), key_hash(pending.state)
        mine = pending_table.c.session_hash == session_key
        newest = (
            select(pending_table.c.state_hash)
            .where(mine, pending_table.c.expires_at > self._clock())
            .order_by(pending_table.c.created_at.desc())
            .limit(MAX_PENDING - 1)
        )
        with self.engine.begin() as connection:
            keep = connection.execute(newest).scalars().all()
            connection.execute(delete(pending_table).where(mine, pending_table.c.state_hash.not_in(keep)))
            connection.execute(
                insert(pending_table).values(
                    state_hash=state_key,
                    session_hash=session_key,
                    payload=seal_pending(self._cipher, state_key, pending),
                    created_at=pending.created,
                    expires_at=pending.expires_at,
                )
            )

    def take_pending(self, session_id: str, state: str) -> PendingAuthorization | None:
        state_key = key_hash(state)
        take = (
            delete(pending_table)
            .where(
                pending_table.c.state_hash == state_key, pending_table.c.session_hash == key_hash(session_id)
            )
            .returning(pending_table.c.payload, pending_table.c.expires_at)
        )
        with self.engine.begin() as connection:
            row = connection.execute(take).first()
        if row is None or row.expires_at <= self._clock():
            return None
        return open_pending(self._cipher, state_key, state, row.payload)

    # ------------------------------------------------------------------ housekeeping

    def purge(self) -> int:
        """Delete every idle or ended session and every expired pending authorization; returns how many."""
        now = self._clock()
        ended = or_(sessions_table.c.last_used_at <= now - self._ttl_s, sessions_table.c.expires_at <= now)
        with self.engine.begin() as connection:
            sessions = connection.execute(delete(sessions_table).where(ended)).rowcount
            pending = connection.execute(
                delete(pending_table).where(pending_table.c.expires_at <= now)
            ).rowcount
        return int(sessions or 0) + int(pending or 0)

    def _maybe_purge(self) -> None:
        now = self._clock()
        if now - self._last_purge < PURGE_INTERVAL_S or not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._last_purge = now
            self.purge()
        finally:
            self._purge_lock.release()

    def _insert(self, connection: Connection, session: SmartSession) -> None:
        row_key = key_hash(session.id)
        connection.execute(
            insert(sessions_table).values(
                id_hash=row_key,
                payload=seal_session(self._cipher, row_key, session),
                created_at=session.created,
                last_used_at=self._clock(),
                expires_at=deadline(session, self._max_age_s),
            )
        )

    @staticmethod
    def _delete(connection: Connection, row_key: str) -> None:
        connection.execute(delete(sessions_table).where(sessions_table.c.id_hash == row_key))
        connection.execute(delete(pending_table).where(pending_table.c.session_hash == row_key))
