"""The `jti` replay store: one table in the service's database, shared by every worker and every instance.

A token's (issuer, jti) is claimed with an insert that does nothing on conflict; zero inserted rows means
the pair was seen before, i.e. a replay. The database's primary key makes the check atomic across
processes, so two workers racing with the same token cannot both win. Rows carry the epoch second after
which the token can no longer be accepted anyway (exp + leeway); expired rows are purged now and then, and
an expired row for the same pair is deleted before the insert (a jti may be reused once its token is dead).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

PURGE_INTERVAL_S = 60.0
metadata = MetaData()
replay_table = Table(
    "cds_jwt_replay",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),  # epoch seconds
)


class ReplayStore:
    """Claims (issuer, jti) pairs in `engine`'s database; the table is created at construction."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock
        self._last_purge = 0.0
        self._purge_lock = threading.Lock()
        metadata.create_all(engine)

    def claim(self, issuer: str, jti: str, expires_at: int) -> bool:
        """True the first time (issuer, jti) is seen while unexpired; False for a replay."""
        now = int(self._clock())
        key = (replay_table.c.issuer == issuer) & (replay_table.c.jti == jti)
        statement = _insert_ignoring_duplicates(self.engine.dialect.name).returning(replay_table.c.jti)
        with self.engine.begin() as connection:
            connection.execute(delete(replay_table).where(key & (replay_table.c.expires_at < now)))
            inserted = connection.execute(
                statement, {"issuer": issuer, "jti": jti, "expires_at": expires_at}
            ).all()
        self._maybe_purge(now)
        return bool(inserted)

    def purge(self) -> int:
        """Delete every expired row; returns how many."""
        now = int(self._clock())
        with self.engine.begin() as connection:
            result = connection.execute(delete(replay_table).where(replay_table.c.expires_at < now))
        return int(result.rowcount or 0)

    def count(self) -> int:
        """Rows currently stored (tests, metrics)."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(replay_table)).scalar_one())

    def _maybe_purge(self, now: float) -> None:
        if now - self._last_purge < PURGE_INTERVAL_S or not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._last_purge = now
            self.purge()
        finally:
            self._purge_lock.release()


def _insert_ignoring_duplicates(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(replay_table).on_conflict_do_nothing(index_elements=["issuer", "jti"])
    if dialect == "sqlite":
        return sqlite.insert(replay_table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect!r} (sqlite or postgresql)")
