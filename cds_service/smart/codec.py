"""Sessions and pending authorizations as encrypted bytes (what the database store keeps).

A document is JSON, then a Fernet token (AES-128-CBC + HMAC-SHA256, with its creation time):
:class:`SessionCipher` seals and opens them with a :class:`cryptography.fernet.MultiFernet` (the first key
encrypts; every key decrypts, so a key can be rotated without dropping the sessions). Each document names
the row it belongs to (``for``: the row key), so a sealed payload copied into another row does not open.
A payload that does not open (another key, tampered, another version) reads as absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cds_service.smart.appcontext import AppContext
from cds_service.smart.sessions import LaunchContext, PendingAuthorization, SmartSession

VERSION = 1


class SessionCipher:
    """Encrypts JSON documents with the session key(s)."""

    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def generate(cls) -> SessionCipher:
        """A cipher with a new random key (development mode without CDS_SMART_SESSION_KEY)."""
        return cls([Fernet.generate_key()])

    def seal(self, document: Mapping[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(document, separators=(",", ":")).encode())

    def open(self, token: bytes) -> dict[str, Any] | None:
        try:
            document = json.loads(self._fernet.decrypt(bytes(token)))
        except (InvalidToken, ValueError):
            return None
        return document if isinstance(document, dict) else None


def seal_session(cipher: SessionCipher, row_key: str, session: SmartSession) -> bytes:
    context = session.context
    document = {
        "v": VERSION,
        "for": row_key,
        "csrf": session.csrf,
        "created": session.created,
        "at_override": _instant(session.at_override),
        "context": None if context is None else _context_document(context),
    }
    return cipher.seal(document)


def open_session(cipher: SessionCipher, row_key: str, session_id: str, token: bytes) -> SmartSession | None:
    document = cipher.open(token)
    if document is None or document.get("v") != VERSION or document.get("for") != row_key:
        return None
    try:
        context = document["context"]
        return SmartSession(
            id=session_id,
            csrf=document["csrf"],
            context=None if context is None else _launch_context(context),
            at_override=_parse_instant(document["at_override"]),
            created=float(document["created"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def seal_pending(cipher: SessionCipher, row_key: str, pending: PendingAuthorization) -> bytes:
    document = {
        "v": VERSION,
        "for": row_key,
        "code_verifier": pending.code_verifier,
        "iss": pending.iss,
        "token_endpoint": pending.token_endpoint,
        "issuer": pending.issuer,
        "jwks_uri": pending.jwks_uri,
        "kind": pending.kind,
        "created": pending.created,
        "return_to": pending.return_to,
    }
    return cipher.seal(document)


def open_pending(
    cipher: SessionCipher, row_key: str, state: str, token: bytes
) -> PendingAuthorization | None:
    document = cipher.open(token)
    if document is None or document.get("v") != VERSION or document.get("for") != row_key:
        return None
    try:
        return PendingAuthorization(
            state=state,
            code_verifier=document["code_verifier"],
            iss=document["iss"],
            token_endpoint=document["token_endpoint"],
            issuer=document["issuer"],
            jwks_uri=document["jwks_uri"],
            kind=document["kind"],
            created=float(document["created"]),
            return_to=document.get("return_to"),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _context_document(context: LaunchContext) -> dict[str, Any]:
    app = context.app_context
    return {
        "iss": context.iss,
        "access_token": context.access_token,
        "expires_at": context.expires_at,
        "scopes": sorted(context.scopes),
        "patient": context.patient,
        "kind": context.kind,
        "need_patient_banner": context.need_patient_banner,
        "patient_locked": context.patient_locked,
        "encounter": context.encounter,
        "fhir_user": context.fhir_user,
        "app_context": {
            "present": app.present,
            "at": _instant(app.at),
            "view": app.view,
            "patient": app.patient,
            "notes": list(app.notes),
        },
    }


def _launch_context(document: Mapping[str, Any]) -> LaunchContext:
    app = document["app_context"]
    expires_at = document["expires_at"]
    return LaunchContext(
        iss=document["iss"],
        access_token=document["access_token"],
        expires_at=None if expires_at is None else float(expires_at),
        scopes=frozenset(document["scopes"]),
        patient=document["patient"],
        kind=document["kind"],
        need_patient_banner=bool(document["need_patient_banner"]),
        patient_locked=bool(document["patient_locked"]),
        encounter=document["encounter"],
        fhir_user=document["fhir_user"],
        app_context=AppContext(
            present=bool(app["present"]),
            at=_parse_instant(app["at"]),
            view=app["view"],
            patient=app["patient"],
            notes=tuple(app["notes"]),
        ),
    )


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
