"""R4 rest-hook Subscriptions (Subscriptions R5 Backport IG, topic-based) where the server offers them.

For a watched patient the watcher creates a Subscription on the patient's Observations:

* topic: the server's ``subscription_topic`` (cds_service.watch.servers), else the one topic its
  CapabilityStatement advertises on Subscription (``capabilitystatement-subscriptiontopic-canonical``);
  none, or several and none configured: polling only;
* filter ``Observation?patient=Patient/<id>`` (``backport-filter-criteria``), ``id-only`` payloads;
* channel ``rest-hook`` to ``{CDS_PUBLIC_BASE_URL}/watch/notify/<token>``, where the token is random (the URL
  names no patient) and a header ``Authorization: Bearer <secret>`` that the server sends with every
  notification; only the secret's SHA-256 is stored.

A notification only tells the watcher *that* something changed: the patient becomes due (store.mark_notified)
and is polled and evaluated with the watcher's own token and queries. Nothing in a notification is trusted
as data. Polling goes on at the usual schedule, because notifications can be lost and the topic covers
Observations only (Conditions and medications are noticed by the poll). When a Subscription is in error or
gone, the next evaluation replaces it; when the server has no Subscriptions (or refuses one), the patient
is polled only.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from cds_service.hooks.fhir_client import FhirFetchError
from cds_service.watch.fhirwrite import fhir_call
from cds_service.watch.servers import WatchServer
from cds_service.watch.store import WatchEntry, WatchStore

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription"
FILTER = f"{BACKPORT}/StructureDefinition/backport-filter-criteria"
CONTENT = f"{BACKPORT}/StructureDefinition/backport-payload-content"
TOPIC_EXTENSION = "capabilitystatement-subscriptiontopic-canonical"
CAPABILITY_TTL_S = 3600.0
TIMEOUT_S = 10.0
LIVE_STATES = frozenset({"requested", "active"})


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and secrets.compare_digest(secret_hash(secret), stored_hash)


@dataclass(frozen=True, slots=True)
class Capability:
    topics: tuple[str, ...]


class SubscriptionManager:
    """Creates, checks and removes the watcher's Subscriptions; caches each server's topics (per process)."""

    def __init__(
        self, session: requests.Session, store: WatchStore, notify_base: str | None, enabled: bool
    ) -> None:
        self._session = session
        self._store = store
        self._notify_base = notify_base
        self.enabled = enabled and notify_base is not None
        self._capabilities: dict[str, tuple[Capability, float]] = {}
        self._lock = threading.Lock()

    def topic(self, server: WatchServer, token: str) -> str | None:
        """The topic to subscribe to on `server`, or None (the server offers none we can use)."""
        if server.subscription_topic is not None:
            return server.subscription_topic
        topics = self._capability(server, token).topics
        return topics[0] if len(topics) == 1 else None

    def _capability(self, server: WatchServer, token: str) -> Capability:
        with self._lock:
            cached = self._capabilities.get(server.base)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        answer = fhir_call(self._session, "GET", f"{server.base}/metadata", token, timeout_s=TIMEOUT_S)
        capability = Capability(_topics(answer.body) if answer.status == 200 else ())
        with self._lock:
            self._capabilities[server.base] = (capability, time.monotonic() + CAPABILITY_TTL_S)
        return capability

    def ensure(self, server: WatchServer, entry: WatchEntry, token: str) -> dict[str, Any]:
        """Values to store: a live Subscription kept, a dead one replaced, or polling only."""
        if not (self.enabled and server.subscriptions and server.may("Subscription", "c")):
            return {} if entry.subscription_state is None else {"subscription_state": None}
        try:
            if entry.subscription_id is not None and entry.subscription_state in LIVE_STATES | {"error"}:
                state = self._state(server, entry.subscription_id, token)
                if state in LIVE_STATES:
                    return {} if state == entry.subscription_state else {"subscription_state": state}
                self.remove(server, entry, token)
            elif entry.subscription_state == "unsupported":
                return {}
            topic = self.topic(server, token)
            if topic is None:
                return _cleared("unsupported")
            return self._create(server, entry, token, topic)
        except FhirFetchError:
            return {}  # try again at the next evaluation; polling covers the meantime

    def _state(self, server: WatchServer, subscription_id: str, token: str) -> str:
        answer = fhir_call(
            self._session, "GET", f"{server.base}/Subscription/{subscription_id}", token, timeout_s=TIMEOUT_S
        )
        if answer.status != 200:
            return "gone"
        return str(answer.body.get("status", "gone"))

    def _create(self, server: WatchServer, entry: WatchEntry, token: str, topic: str) -> dict[str, Any]:
        path_token, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
        # Stored first: the server's handshake may arrive before this evaluation's result is written.
        self._store.prepare_subscription(entry.id, path_token, secret_hash(secret))
        resource = {
            "resourceType": "Subscription",
            "meta": {"profile": [PROFILE]},
            "status": "requested",
            "reason": "IEC-HS watch list: new results of a patient after CAR-T therapy",
            "criteria": topic,
            "_criteria": {
                "extension": [
                    {"url": FILTER, "valueString": f"Observation?patient=Patient/{entry.patient_id}"}
                ]
            },
            "channel": {
                "type": "rest-hook",
                "endpoint": f"{self._notify_base}/watch/notify/{path_token}",
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": CONTENT, "valueCode": "id-only"}]},
                "header": [f"Authorization: Bearer {secret}"],
            },
        }
        answer = fhir_call(
            self._session, "POST", f"{server.base}/Subscription", token, body=resource, timeout_s=TIMEOUT_S
        )
        if answer.status not in (200, 201) or not isinstance(answer.body.get("id"), str):
            # 400 (not supported, topic or filter refused), 403 (no scope), 404/405 (no Subscription):
            # the patient is polled only.
            return _cleared("unsupported")
        return {
            "subscription_id": answer.body["id"],
            "subscription_state": str(answer.body.get("status", "requested")),
            "subscription_token": path_token,
            "subscription_secret_hash": secret_hash(secret),
        }

    def remove(self, server: WatchServer, entry: WatchEntry, token: str) -> None:
        """Delete the patient's Subscription (best effort: a failure leaves one the server will error out)."""
        if entry.subscription_id is None:
            return
        try:
            fhir_call(
                self._session,
                "DELETE",
                f"{server.base}/Subscription/{entry.subscription_id}",
                token,
                timeout_s=TIMEOUT_S,
            )
        except FhirFetchError:
            pass


def _cleared(state: str | None) -> dict[str, Any]:
    return {
        "subscription_id": None,
        "subscription_state": state,
        "subscription_token": None,
        "subscription_secret_hash": None,
    }


def _topics(capability: dict[str, Any]) -> tuple[str, ...]:
    topics: list[str] = []
    for rest in capability.get("rest") or []:
        for resource in rest.get("resource") or [] if isinstance(rest, dict) else []:
            if not isinstance(resource, dict) or resource.get("type") != "Subscription":
                continue
            for extension in resource.get("extension") or []:
                if isinstance(extension, dict) and str(extension.get("url", "")).endswith(TOPIC_EXTENSION):
                    value = extension.get("valueCanonical")
                    if isinstance(value, str):
                        topics.append(value)
    return tuple(dict.fromkeys(topics))


def notification_kind(body: Any) -> str | None:
    """The notification type (handshake, heartbeat, event-notification, ...) of a backport Bundle, if any."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    entries = body.get("entry")
    first = (
        entries[0].get("resource")
        if isinstance(entries, list) and entries and isinstance(entries[0], dict)
        else None
    )
    if not isinstance(first, dict) or first.get("resourceType") not in ("Parameters", "SubscriptionStatus"):
        return None
    for parameter in first.get("parameter") or []:
        if isinstance(parameter, dict) and parameter.get("name") == "type":
            value = parameter.get("valueCode")
            return value if isinstance(value, str) else None
    return None
