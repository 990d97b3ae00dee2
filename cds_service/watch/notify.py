"""Notifications of a status change: a signed JSON webhook and, where configured, a FHIR write-back.

Both are queued in the outbox (cds_service.watch.store) in the transaction that records the change, and
delivered from there by whichever process claims them:

* **Webhook**: ``POST CDS_WATCH_WEBHOOK_URL`` with a JSON body naming the patient by id only and linking to
  the dashboard, signed per `Standard Webhooks <https://www.standardwebhooks.com/>`_ (the
  ``standardwebhooks`` package): ``webhook-id`` is the change id, ``webhook-timestamp`` the send time (epoch
  seconds), ``webhook-signature`` ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{raw body}">`` with the
  configured secret. A 2xx answer delivers it; anything else is retried with exponential backoff and full
  jitter (``retry_delay``) up to CDS_WATCH_WEBHOOK_MAX_ATTEMPTS, then given up (worklist and metrics say
  so). Every attempt carries the same change id: receivers de-duplicate by it.
* **FHIR write-back** (CDS_WATCH_WRITE_BACK): a ``Communication`` (or ``Flag``) about the patient, created
  with ``If-None-Exist: identifier=urn:ietf:rfc:3986|urn:uuid:<change id>``, so a retried create cannot make
  a second one. Needs the write scope in the server's backend client.

Retries live in the outbox (``next_attempt_at``), not in a sleeping thread: they survive restarts and any
instance may make the next attempt.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from standardwebhooks import Webhook

from cds_service.watch.store import Change, WatchEntry

EVENT_TYPE = "iec-hs.status-change"
BASE_DELAY_S = 30.0
MAX_DELAY_S = 3600.0
IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
STATUS_TEXT = {"met": "met", "possible": "possible", None: "none"}


def retry_delay(attempts: int, *, base: float = BASE_DELAY_S, cap: float = MAX_DELAY_S) -> float:
    """Exponential backoff with full jitter after `attempts` failed attempts: uniform in
    [0.5, 1] x min(cap, base x 2^(attempts - 1)) (half the nominal delay at least, so retries never bunch)."""
    nominal = min(cap, base * 2.0 ** max(0, attempts - 1))
    return float(nominal * random.uniform(0.5, 1.0))


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def webhook_payload(entry: WatchEntry, change: Change, *, base_url: str) -> dict[str, Any]:
    """The webhook body: the patient by id, the FHIR server, what rose to what, links. No other PHI."""
    return {
        "type": EVENT_TYPE,
        "changeId": change.change_id,
        "patientId": entry.patient_id,
        "fhirServer": entry.fhir_server,
        "previous": {"status": change.from_status, "grade": change.from_grade},
        "current": {
            "status": change.to_status,
            "grade": change.to_grade,
            "dayPostInfusion": change.day_post_infusion,
        },
        "evaluatedAt": iso(change.evaluated_at),
        "dashboardUrl": f"{base_url}/smart/worklist/open/{entry.entry_id}",
        "worklistUrl": f"{base_url}/smart/worklist",
    }


def summary_text(payload: Mapping[str, Any]) -> str:
    current, previous = payload["current"], payload["previous"]
    grade = f", grade {current['grade']}" if current.get("grade") else ""
    day = current.get("dayPostInfusion")
    when = f" on day {day} after CAR-T infusion" if day is not None else ""
    return (
        f"IEC-HS screening: status {current['status']}{grade}{when} "
        f"(was {previous.get('status') or 'none'}). Review the IEC-HS dashboard: {payload['dashboardUrl']}"
    )


def fhir_resource(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The Communication (or Flag) written back to the EHR for one change."""
    identifier = [{"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{payload['changeId']}"}]
    subject = {"reference": f"Patient/{payload['patientId']}"}
    text = summary_text(payload)
    if kind == "Flag":
        return {
            "resourceType": "Flag",
            "identifier": identifier,
            "status": "active",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                            "code": "clinical",
                        }
                    ]
                }
            ],
            "code": {"text": text},
            "subject": subject,
            "period": {"start": payload["evaluatedAt"]},
        }
    return {
        "resourceType": "Communication",
        "identifier": identifier,
        "status": "completed",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                        "code": "alert",
                    }
                ]
            }
        ],
        "priority": "urgent" if payload["current"]["status"] == "met" else "asap",
        "subject": subject,
        "sent": payload["evaluatedAt"],
        "payload": [{"contentString": text}],
    }


class DeliveryError(Exception):
    """One delivery attempt failed; `reason` is short and safe to log (no URL, no body)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def send_webhook(
    session: requests.Session,
    url: str,
    secret: str,
    payload: Mapping[str, Any],
    *,
    timeout_s: float,
    now: datetime | None = None,
) -> None:
    """POST the signed payload once; raises DeliveryError unless the receiver answers 2xx."""
    body = orjson.dumps(payload).decode()
    sent = now or datetime.now(UTC)
    change_id = str(payload["changeId"])
    headers = {
        "Content-Type": "application/json",
        "webhook-id": change_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": Webhook(secret).sign(change_id, sent, body),
    }
    try:
        response = session.post(
            url, data=body.encode(), headers=headers, timeout=timeout_s, allow_redirects=False
        )
    except requests.Timeout:
        raise DeliveryError("timeout") from None
    except requests.RequestException:
        raise DeliveryError("connection failed") from None
    with response:
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code}")
