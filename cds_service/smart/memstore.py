"""Sessions in this process's memory: for tests and single-process embedding, not for ``cds-service serve``
(its gunicorn workers would not see each other's sessions). Plug it in as
``app.config["SMART_SESSION_STORE"]``. Same expiry rules as the database store, no encryption."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

from cds_service.smart.sessions import (
    MAX_PENDING,
    PENDING_TTL_S,
    PendingAuthorization,
    SmartSession,
    deadline,
    new_secret,
    without_token,
)


class MemorySessionStore:
    """Thread-safe in-memory sessions with an idle timeout (each read restarts the clock), at most
    `max_sessions` (the least recently stored go first)."""

    def __init__(
        self,
        ttl_s: float,
        max_sessions: int,
        *,
        max_age_s: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions: TTLCache[str, SmartSession] = TTLCache(max_sessions, ttl_s, timer=clock)
        self._pending: TTLCache[str, dict[str, PendingAuthorization]] = TTLCache(
            max_sessions, PENDING_TTL_S, timer=clock
        )
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()

    def create(self) -> SmartSession:
        session = SmartSession(created=self._clock())
        with self._lock:
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> SmartSession | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            end = deadline(session, self._max_age_s)
            if end <= self._clock():
                self._drop(session_id)
                return without_token(session, end)
            self._sessions[session_id] = session  # restarts the idle clock
            return session

    def save(self, session: SmartSession) -> None:
        with self._lock:
            if session.id in self._sessions:
                self._sessions[session.id] = session

    def rotate(self, session: SmartSession) -> SmartSession:
        with self._lock:
            self._sessions.pop(session.id, None)
            pending = self._pending.pop(session.id, None)
            session.id, session.csrf, session.created = new_secret(), new_secret(), self._clock()
            self._sessions[session.id] = session
            if pending:
                self._pending[session.id] = pending
        return session

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._drop(session_id)

    def add_pending(self, session_id: str, pending: PendingAuthorization) -> None:
        with self._lock:
            mine = {
                s: p for s, p in self._pending.get(session_id, {}).items() if not p.expired(self._clock())
            }
            while len(mine) >= MAX_PENDING:
                del mine[next(iter(mine))]
            mine[pending.state] = pending
            self._pending[session_id] = mine

    def take_pending(self, session_id: str, state: str) -> PendingAuthorization | None:
        with self._lock:
            mine = self._pending.get(session_id, {})
            match = None
            for candidate in list(mine):  # constant-time comparison with every candidate
                if secrets.compare_digest(candidate.encode(), state.encode()):
                    match = candidate
            pending = mine.pop(match, None) if match is not None else None
        return None if pending is None or pending.expired(self._clock()) else pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._pending.pop(session_id, None)
