"""Server-side sessions: the browser holds only an opaque random id; tokens never leave the server.

The cookie ``cds_smart_sid`` (HttpOnly, SameSite=Lax, Secure behind https, path /smart) carries 256 random
bits and nothing else. Because the id is unguessable and means nothing without this store, it needs no
signing key. What it points to lives in :class:`MemorySessionStore`, a TTL map in this process's memory:

* a pending authorization per ``state`` (PKCE verifier, token endpoint) between launch and callback;
* after the callback, the launch context: access token, expiry, granted scopes, patient, appContext.

Multi-process deployments (several gunicorn workers, several hosts) must route a browser to the same process
(sticky sessions) or plug in a shared store implementing :class:`SessionStore`
(``app.config["SMART_SESSION_STORE"]``); otherwise a callback can land on a process that never saw the
launch and the user gets the "no active session" page.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from cachetools import TTLCache

from cds_service.smart.appcontext import AppContext

COOKIE_NAME = "cds_smart_sid"
COOKIE_PATH = "/smart"
MAX_PENDING = 5  # concurrent launches per browser (tabs); the oldest is dropped beyond this
PENDING_TTL_S = 600  # an authorization not completed within 10 minutes must be restarted

LaunchKind = Literal["ehr", "standalone"]


def new_secret() -> str:
    """256 bits from the OS CSPRNG, URL-safe (session ids, CSRF tokens)."""
    return secrets.token_urlsafe(32)


@dataclass(slots=True)
class PendingAuthorization:
    """What the callback needs to finish one authorization (bound to this browser's session)."""

    state: str
    code_verifier: str = field(repr=False)
    iss: str
    token_endpoint: str
    issuer: str | None
    jwks_uri: str | None
    kind: LaunchKind
    created: float = field(default_factory=time.monotonic)

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - self.created > PENDING_TTL_S


@dataclass(slots=True)
class LaunchContext:
    """The outcome of a completed authorization: whose data, with which token, until when."""

    iss: str
    access_token: str = field(repr=False)
    expires_at: float | None  # time.time() seconds; None when the server gave no expires_in
    scopes: frozenset[str]
    patient: str | None
    kind: LaunchKind
    need_patient_banner: bool = True
    patient_locked: bool = False  # the patient came from the token: the picker may not change it
    encounter: str | None = None
    app_context: AppContext = field(default_factory=AppContext)
    fhir_user: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at


@dataclass(slots=True)
class SmartSession:
    """One browser's state. Mutated only by the request handlers of that browser."""

    id: str = field(default_factory=new_secret, repr=False)
    csrf: str = field(default_factory=new_secret, repr=False)
    pending: dict[str, PendingAuthorization] = field(default_factory=dict)
    context: LaunchContext | None = None
    at_override: datetime | None = None  # an evaluation instant chosen in the dashboard

    def add_pending(self, pending: PendingAuthorization) -> None:
        for state in [s for s, p in self.pending.items() if p.expired()]:
            del self.pending[state]
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        self.pending[pending.state] = pending

    def take_pending(self, state: str) -> PendingAuthorization | None:
        """Removes and returns the pending authorization whose state equals `state` (constant time)."""
        match = None
        for candidate in list(self.pending):
            if secrets.compare_digest(candidate.encode(), state.encode()):
                match = candidate
        pending = self.pending.pop(match, None) if match is not None else None
        return None if pending is None or pending.expired() else pending


class SessionStore(Protocol):
    """Where sessions live; swap in a shared implementation for multi-process deployments."""

    def create(self) -> SmartSession: ...

    def get(self, session_id: str) -> SmartSession | None: ...

    def save(self, session: SmartSession) -> None: ...

    def rotate(self, session: SmartSession) -> SmartSession: ...

    def delete(self, session_id: str) -> None: ...


class MemorySessionStore:
    """Thread-safe in-memory sessions with an idle timeout (each save restarts the clock)."""

    def __init__(self, ttl_s: float, max_sessions: int) -> None:
        self._cache: TTLCache[str, SmartSession] = TTLCache(maxsize=max_sessions, ttl=ttl_s)
        self._lock = threading.Lock()

    def create(self) -> SmartSession:
        session = SmartSession()
        self.save(session)
        return session

    def get(self, session_id: str) -> SmartSession | None:
        with self._lock:
            return self._cache.get(session_id)

    def save(self, session: SmartSession) -> None:
        with self._lock:
            self._cache[session.id] = session

    def rotate(self, session: SmartSession) -> SmartSession:
        """Moves the session to a fresh id (after login, against session fixation)."""
        with self._lock:
            self._cache.pop(session.id, None)
            session.id = new_secret()
            session.csrf = new_secret()
            self._cache[session.id] = session
        return session

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._cache.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
