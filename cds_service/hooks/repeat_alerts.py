"""Fewer repeat alerts: after an override "already aware / being treated" the same card is one line a while.

"The same card" is the same patient, service, IEC-HS status and grade. Its identity is stored only as a keyed
hash, HMAC-SHA256(secret, patient id | service id | status | grade): no patient identifier is stored in clear.
Two tables in the feedback database (shared by every worker; SQLite or PostgreSQL):

* ``cds_card_identity``: card uuid -> identity hash, written when a card is issued (feedback names only the
  card's uuid);
* ``cds_card_suppression``: identity hash -> until when the card is acknowledged, written when an override
  with one of ``repeat_alerts.reasons`` (cards/templates.yaml) arrives; ``repeat_alerts.hours`` long (24 h).

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
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Column, DateTime, Engine, String, Table, delete, insert, select, update

from cds_service.hooks.feedback import FeedbackRecord, metadata

log = logging.getLogger("cds_service.hooks.repeat_alerts")
KEY_VARIABLE = "CDS_REPEAT_ALERT_KEY"
DEVELOPMENT_KEY = b"development-only repeat-alert key (synthetic data only)"
KEEP_IDENTITIES = timedelta(days=7)  # feedback for a card older than this no longer suppresses anything

identity_table = Table(
    "cds_card_identity",
    metadata,
    Column("card_uuid", String(256), primary_key=True),
    Column("identity", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)
suppression_table = Table(
    "cds_card_suppression",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("until", DateTime(timezone=True), nullable=False),
)


class RepeatAlerts:
    """Identity hashes of issued cards and the acknowledged ones, behind the feedback store's engine."""

    def __init__(self, engine: Engine, secret: bytes, hours: float, reasons: Iterable[str]) -> None:
        self.engine = engine
        self._secret = secret
        self.window = timedelta(hours=hours)
        self.reasons = frozenset(reasons)
        metadata.create_all(engine, tables=[identity_table, suppression_table])

    def identity(self, patient_id: str, service_id: str, status: str, grade: int | None) -> str:
        message = "|".join((patient_id, service_id, status, "" if grade is None else str(grade)))
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def acknowledged(self, identity: str, now: datetime) -> bool:
        query = select(suppression_table.c.until).where(suppression_table.c.identity == identity)
        with self.engine.connect() as connection:
            until = connection.execute(query).scalar_one_or_none()
        return until is not None and _aware(until) > now

    def issued(self, card_uuids: Iterable[str], identity: str, now: datetime) -> None:
        rows = [{"card_uuid": uuid, "identity": identity, "issued_at": now} for uuid in card_uuids]
        if not rows:
            return
        with self.engine.begin() as connection:
            for row in rows:
                existing = select(identity_table.c.card_uuid).where(
                    identity_table.c.card_uuid == row["card_uuid"]
                )
                if connection.execute(existing).first() is None:
                    connection.execute(insert(identity_table), row)
            connection.execute(
                delete(identity_table).where(identity_table.c.issued_at < now - KEEP_IDENTITIES)
            )

    def feedback(self, records: Iterable[FeedbackRecord], now: datetime) -> int:
        """Acknowledge the cards overridden with a repeat-alert reason; returns how many identities."""
        uuids = [
            r.card_uuid for r in records if r.outcome == "overridden" and r.override_code in self.reasons
        ]
        if not uuids:
            return 0
        until = now + self.window
        query = select(identity_table.c.identity).where(identity_table.c.card_uuid.in_(uuids))
        with self.engine.begin() as connection:
            identities = set(connection.execute(query).scalars())
            for identity in identities:
                changed = connection.execute(
                    update(suppression_table)
                    .where(suppression_table.c.identity == identity)
                    .values(until=until)
                ).rowcount
                if not changed:
                    connection.execute(insert(suppression_table), {"identity": identity, "until": until})
        return len(identities)


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
