"""Fewer repeat alerts: after an override "already aware / being treated" the same card is one line a while.

"The same card" is the same patient, service, IEC-HS status and grade. Its identity is a keyed hash,
HMAC-SHA256(secret, patient id | service id | status | grade): no patient identifier is stored in clear.

Feedback names a card only by its uuid, so the card carries its identity in its uuid: a met patient-view card
gets a UUIDv8 (RFC 9562) whose first 10 bytes are the identity's first 10 (version and variant bits set: 74
bits of the hash) and whose last 6 come from the card's random uuid. Nothing is written when a card is issued
(the hook's hot path only reads); the feedback endpoint reads the identity back from the uuid. One table in
the feedback database (shared by every worker; SQLite or PostgreSQL):

* ``cds_card_suppression``: identity key -> until when the card is acknowledged, written when an override
  with one of ``repeat_alerts.reasons`` (cards/templates.yaml) arrives; ``repeat_alerts.hours`` long (24 h).

A uuid the service did not make this way (another version, another card) acknowledges nothing; one made up
by a client acknowledges an identity only if it copies a card's, which only the holder of that card knows.
A new status or grade is a new identity, so it is shown in full again at once. The secret is
``CDS_REPEAT_ALERT_KEY`` (or ``app.config["REPEAT_ALERT_KEY"]``); development mode without one uses a fixed,
published development key (synthetic data only); production without one turns the feature off (every card in
full) and says so in the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Column, DateTime, Engine, String, Table, delete, insert, select, update

from cds_service.hooks.feedback import FeedbackRecord, metadata

log = logging.getLogger("cds_service.hooks.repeat_alerts")
KEY_VARIABLE = "CDS_REPEAT_ALERT_KEY"
DEVELOPMENT_KEY = b"development-only repeat-alert key (synthetic data only)"
KEY_BYTES = 10  # of the card uuid that carry the identity; the other 6 are random (unique uuids)

suppression_table = Table(
    "cds_card_suppression",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("until", DateTime(timezone=True), nullable=False),
)


class RepeatAlerts:
    """Card identities carried in card uuids, and the acknowledged ones in the feedback database."""

    def __init__(self, engine: Engine, secret: bytes, hours: float, reasons: Iterable[str]) -> None:
        self.engine = engine
        self._secret = secret
        self.window = timedelta(hours=hours)
        self.reasons = frozenset(reasons)
        metadata.create_all(engine, tables=[suppression_table])

    def identity(self, patient_id: str, service_id: str, status: str, grade: int | None) -> str:
        message = "|".join((patient_id, service_id, status, "" if grade is None else str(grade)))
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def card_uuid(identity: str, drawn: str) -> str:
        """The uuid of a card of this identity (readable back by `key_of`): its last bytes come from `drawn`,
        the uuid the card was given (random in service, deterministic under a test's uuid factory)."""
        tail = hashlib.sha256(drawn.encode("utf-8")).digest()[: 16 - KEY_BYTES]
        return str(uuid.UUID(bytes=_key_bytes(identity) + tail))

    def acknowledged(self, identity: str, now: datetime) -> bool:
        key = _key_bytes(identity).hex()
        query = select(suppression_table.c.until).where(suppression_table.c.identity == key)
        with self.engine.connect() as connection:
            until = connection.execute(query).scalar_one_or_none()
        return until is not None and _aware(until) > now

    def feedback(self, records: Iterable[FeedbackRecord], now: datetime) -> int:
        """Acknowledge the cards overridden with a repeat-alert reason; returns how many identities."""
        keys = {
            key
            for r in records
            if r.outcome == "overridden" and r.override_code in self.reasons
            if (key := key_of(r.card_uuid)) is not None
        }
        if not keys:
            return 0
        until = now + self.window
        with self.engine.begin() as connection:
            connection.execute(delete(suppression_table).where(suppression_table.c.until < now))
            for key in sorted(keys):
                changed = connection.execute(
                    update(suppression_table).where(suppression_table.c.identity == key).values(until=until)
                ).rowcount
                if not changed:
                    connection.execute(insert(suppression_table), {"identity": key, "until": until})
        return len(keys)


def _key_bytes(identity: str) -> bytes:
    """The identity's first KEY_BYTES bytes as they stand in the card uuid (version 8, RFC variant)."""
    key = bytearray(bytes.fromhex(identity)[:KEY_BYTES])
    key[6] = (key[6] & 0x0F) | 0x80  # version 8: custom layout
    key[8] = (key[8] & 0x3F) | 0x80  # variant: RFC 9562
    return bytes(key)


def key_of(card_uuid: str) -> str | None:
    """The identity key a card uuid carries, or None for a uuid not made by `card_uuid`."""
    try:
        parsed = uuid.UUID(card_uuid)
    except ValueError:
        return None
    if parsed.variant != uuid.RFC_4122 or parsed.version != 8:
        return None
    return parsed.bytes[:KEY_BYTES].hex()


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC)."""
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def secret_from(configured: str | bytes | None, *, dev_mode: bool) -> bytes | None:
    """The HMAC secret: configured, else the environment, else the development key (development only)."""
    value = configured if configured is not None else os.environ.get(KEY_VARIABLE)
    if value:
        return value.encode("utf-8") if isinstance(value, str) else value
    if dev_mode:
        return DEVELOPMENT_KEY
    log.warning(
        "repeat-alert suppression is off: no %s configured (every card is shown in full)",
        KEY_VARIABLE,
        extra={"event": "repeat-alerts-off"},
    )
    return None
