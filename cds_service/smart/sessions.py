"""Server-side sessions: the browser holds only an opaque random id; tokens never leave the server.

The cookie ``cds_smart_sid`` (HttpOnly, SameSite=Lax, Secure behind https, path /smart) carries 256 random
bits and nothing else. Because the id is unguessable and means nothing without the store, it needs no
signing key. The store (:class:`SessionStore`) keeps:

* per browser session: the CSRF token, an evaluation instant chosen on the page and, after the callback,
  the launch context (access token, expiry, granted scopes, patient, appContext, fhirUser);
* apart from it, a pending authorization per ``state`` (PKCE verifier, token endpoint) between launch and
  callback. It is bound to the session that started it and used up by the callback (single use).

The default store is :class:`cds_service.smart.dbstore.SqlSessionStore`: tables in the service's database,
shared by every gunicorn worker (and every host using that database), payloads encrypted with Fernet.
:class:`cds_service.smart.memstore.MemorySessionStore` keeps them in one process's memory instead.

Expiry, the same in every store: a session is gone once idle for the idle TTL (each read restarts the
clock). It also has an absolute deadline (:func:`deadline`): the access token's expiry, and at most
``max_age_s`` after sign-in. A read past the deadline deletes the session and returns it once more with the
token removed, so the page can say "your authorization has expired"; afterwards it is simply unknown.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

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

    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    iss: str
    token_endpoint: str
    issuer: str | None
    jwks_uri: str | None
    kind: LaunchKind
    created: float = field(default_factory=time.time)  # wall clock: compared across processes and hosts
    return_to: str | None = None  # a local page to show after sign-in (the watch list's), else the dashboard

    @property
    def expires_at(self) -> float:
        return self.created + PENDING_TTL_S

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


@dataclass(slots=True)
class LaunchContext:
    """The outcome of a completed authorization: whose data, with which token, until when."""

    iss: str
    access_token: str = field(repr=False)  # "" once the session has expired (see without_token)
    expires_at: float | None  # time.time() seconds; None when the server gave no expires_in
    scopes: frozenset[str]
    patient: str | None = field(repr=False)
    kind: LaunchKind
    need_patient_banner: bool = True
    patient_locked: bool = False  # the patient came from the token: the picker may not change it
    encounter: str | None = field(default=None, repr=False)
    app_context: AppContext = field(default_factory=AppContext, repr=False)
    fhir_user: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at


@dataclass(slots=True)
class SmartSession:
    """One browser's state. Mutated only by the request handlers of that browser, then saved."""

    id: str = field(default_factory=new_secret, repr=False)
    csrf: str = field(default_factory=new_secret, repr=False)
    context: LaunchContext | None = None
    at_override: datetime | None = None  # an evaluation instant chosen in the dashboard
    created: float = field(default_factory=time.time)  # creation, or sign-in (rotate)


def deadline(session: SmartSession, max_age_s: float) -> float:
    """The absolute end of `session`: `max_age_s` after creation or sign-in, or the token's expiry."""
    end = session.created + max_age_s
    if session.context is not None and session.context.expires_at is not None:
        end = min(end, session.context.expires_at)
    return end


def without_token(session: SmartSession, end: float) -> SmartSession | None:
    """What a read past the deadline `end` returns: the context without its token and marked expired, so
    the page can say so; None for a session that never signed in (nothing to explain)."""
    if session.context is None:
        return None
    session.context = dataclasses.replace(
        session.context,
        access_token="",
        expires_at=min(end, session.context.expires_at or end),
    )
    return session


class SessionStore(Protocol):
    """Where sessions live. Several processes must share one store (the default, on the database)."""

    def create(self) -> SmartSession:
        """A new empty session, stored."""
        ...

    def get(self, session_id: str) -> SmartSession | None:
        """The live session, or None; restarts its idle clock (past its deadline: see without_token)."""
        ...

    def save(self, session: SmartSession) -> None:
        """Store changes of a session read from this store (a deleted or rotated session stays gone)."""
        ...

    def rotate(self, session: SmartSession) -> SmartSession:
        """Move the session and its pending authorizations to a fresh id and CSRF token (after sign-in)."""
        ...

    def delete(self, session_id: str) -> None:
        """Drop the session and its pending authorizations."""
        ...

    def add_pending(self, session_id: str, pending: PendingAuthorization) -> None:
        """Remember an authorization started by this session (at most MAX_PENDING, oldest dropped)."""
        ...

    def take_pending(self, session_id: str, state: str) -> PendingAuthorization | None:
        """Remove and return the unexpired authorization of this session with this `state` (single use:
        of two concurrent calls, at most one gets it)."""
        ...
