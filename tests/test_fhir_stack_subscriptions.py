"""R4 backport Subscriptions (topic-based, rest-hook) and the polling fallback, against the real stack.

Notifications are POSTed by the Node stack to a real HTTP endpoint on 127.0.0.1
(:class:`tests.plugins.rest_hook.RestHookReceiver`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.loopback_http import closed_port_url
from tests.plugins.fhir_stack import FhirStack
from tests.plugins.rest_hook import Notification, RestHookReceiver

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
TOPIC = "http://example.org/fhir/SubscriptionTopic/patient-observation"
FILTER = f"{BACKPORT}/StructureDefinition/backport-filter-criteria"
CONTENT = f"{BACKPORT}/StructureDefinition/backport-payload-content"
LOINC = "http://loinc.org"
RUN = uuid.uuid4().hex[:6]


def pid(name: str) -> str:
    return f"sub-{RUN}-{name}"


@pytest.fixture(scope="module")
def stack(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    """An empty stack of its own: subscriptions here never see other modules' writes."""
    with fhir_stack.start_extra({}, seeds=[]) as extra:
        yield extra


@pytest.fixture
def fhir(stack: FhirStack) -> Iterator[requests.Session]:
    with stack.session() as sess:
        yield sess


@pytest.fixture
def hook() -> Iterator[RestHookReceiver]:
    with RestHookReceiver() as receiver:
        yield receiver


def subscription(
    endpoint: str,
    *filters: str,
    content: str | None = "id-only",
    headers: list[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "header": headers or [],
    }
    if content:
        channel["_payload"] = {"extension": [{"url": CONTENT, "valueCode": content}]}
    sub: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/StructureDefinition/backport-subscription"]},
        "status": "requested",
        "reason": "test",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": FILTER, "valueString": f} for f in filters]},
        "channel": channel,
    }
    sub.update(overrides)
    return sub


def observation(patient: str, code: str = "2276-4", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


def create(fhir: requests.Session, stack: FhirStack, resource: dict[str, Any]) -> dict[str, Any]:
    resp = fhir.post(f"{stack.fhir_base}/{resource['resourceType']}", json=resource, timeout=30)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def wait_status(
    fhir: requests.Session, stack: FhirStack, sub_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        sub: dict[str, Any] = fhir.get(f"{stack.fhir_base}/Subscription/{sub_id}", timeout=30).json()
        if sub["status"] == status:
            return sub
        assert time.monotonic() < deadline, f"Subscription stayed {sub['status']} (wanted {status}): {sub}"
        time.sleep(0.1)


def is_event(number: int) -> Callable[[Notification], bool]:
    return lambda n: n.type == "event-notification" and n.events_since_start == number


def start(fhir: requests.Session, stack: FhirStack, hook: RestHookReceiver, *filters: str, **kw: Any) -> str:
    """Creates a subscription, waits for its handshake and for status active; returns its id."""
    created = create(fhir, stack, subscription(hook.url, *filters, **kw))
    assert created["status"] == "requested"
    hook.wait_for(lambda n: n.type == "handshake")
    wait_status(fhir, stack, created["id"], "active")
    return str(created["id"])


def test_capability_statement_declares_backport_subscriptions(stack: FhirStack) -> None:
    cap = requests.get(f"{stack.fhir_base}/metadata", timeout=30).json()
    assert f"{BACKPORT}/CapabilityStatement/backport-subscription-server-r4" in cap["instantiates"]
    (sub,) = [r for r in cap["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert sub["supportedProfile"] == [f"{BACKPORT}/StructureDefinition/backport-subscription"]
    topics = [
        e["valueCanonical"] for e in sub["extension"] if e["url"].endswith("subscriptiontopic-canonical")
    ]
    assert topics == [TOPIC] == stack.info["subscription_topics"]
    assert {i["code"] for i in sub["interaction"]} >= {"create", "read", "update", "delete"}


def test_handshake_then_active(stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver) -> None:
    created = create(fhir, stack, subscription(hook.url, f"Observation?patient=Patient/{pid('hs')}"))
    assert created["status"] == "requested"
    handshake = hook.wait_for(lambda n: n.type == "handshake")
    assert handshake.body["resourceType"] == "Bundle" and handshake.body["type"] == "history"
    assert handshake.headers["Content-Type"].startswith("application/fhir+json")
    status = handshake.status
    assert status["resourceType"] == "Parameters"
    assert status["meta"]["profile"] == [f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"]
    assert handshake.subscription == f"{stack.fhir_base}/Subscription/{created['id']}"
    assert (handshake.parameter("status") or {})["valueCode"] == "requested"
    assert (handshake.parameter("topic") or {})["valueCanonical"] == TOPIC
    assert handshake.events_since_start == 0 and handshake.events() == []
    assert handshake.body["entry"][0]["request"] == {
        "method": "GET",
        "url": f"{stack.fhir_base}/Subscription/{created['id']}/$status",
    }
    active = wait_status(fhir, stack, created["id"], "active")
    assert "error" not in active


def test_matching_creates_and_updates_are_notified(
    stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver
) -> None:
    patient = pid("a")
    start(
        fhir, stack, hook, f"Observation?patient=Patient/{patient}", headers=["Authorization: Bearer hook-1"]
    )

    first = create(fhir, stack, observation(patient))
    create(fhir, stack, observation(pid("someone-else")))
    first["status"] = "amended"
    assert fhir.put(f"{stack.fhir_base}/Observation/{first['id']}", json=first, timeout=30).status_code == 200
    second = create(fhir, stack, observation(patient, "3255-7"))

    notes = [hook.wait_for(is_event(n)) for n in (1, 2, 3)]
    focus = [n.events()[0]["focus"] for n in notes]
    url = f"{stack.fhir_base}/Observation"
    assert focus == [f"{url}/{first['id']}", f"{url}/{first['id']}", f"{url}/{second['id']}"]
    for note in notes:
        assert note.headers["Authorization"] == "Bearer hook-1"
        assert (note.parameter("status") or {})["valueCode"] == "active"
        assert (note.parameter("topic") or {})["valueCanonical"] == TOPIC
        (event,) = note.events()
        assert event["event-number"] == str(note.events_since_start)
        assert event["timestamp"].endswith("Z")
        assert len(note.body["entry"]) == 1  # id-only: no resource entries
    events = [n for n in hook.notifications if n.type == "event-notification"]
    assert len(events) == 3  # the other patient's Observation was not notified


def test_bare_patient_id_filter_and_code_filter(
    stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver
) -> None:
    patient = pid("b")
    start(fhir, stack, hook, f"Observation?patient={patient}&code={LOINC}|3255-7")
    create(fhir, stack, observation(patient, "2276-4"))  # other code: no event
    wanted = create(fhir, stack, observation(patient, "3255-7"))
    note = hook.wait_for(is_event(1))
    assert note.events()[0]["focus"].endswith(f"/Observation/{wanted['id']}")


def test_full_resource_payload(stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver) -> None:
    patient = pid("c")
    start(fhir, stack, hook, f"Observation?subject=Patient/{patient}", content="full-resource")
    created = create(fhir, stack, observation(patient))
    created["status"] = "corrected"
    fhir.put(f"{stack.fhir_base}/Observation/{created['id']}", json=created, timeout=30).raise_for_status()

    for number, method, url, status in (
        (1, "POST", "Observation", "201"),
        (2, "PUT", f"Observation/{created['id']}", "200"),
    ):
        note = hook.wait_for(is_event(number))
        entry = note.body["entry"][1]
        assert entry["fullUrl"] == f"{stack.fhir_base}/Observation/{created['id']}"
        assert entry["resource"]["id"] == created["id"]
        assert entry["request"] == {"method": method, "url": url}
        assert entry["response"]["status"] == status
    assert hook.wait_for(is_event(2)).body["entry"][1]["resource"]["status"] == "corrected"


def test_empty_payload_has_no_focus(stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver) -> None:
    patient = pid("d")
    start(fhir, stack, hook, f"Observation?patient=Patient/{patient}", content="empty")
    create(fhir, stack, observation(patient))
    note = hook.wait_for(is_event(1))
    assert note.events() == [{"event-number": "1", "timestamp": note.events()[0]["timestamp"]}]
    assert note.parameter("topic") is None and len(note.body["entry"]) == 1


def test_observations_from_a_transaction_are_notified(
    stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver
) -> None:
    patient = pid("e")
    start(fhir, stack, hook, f"Observation?patient=Patient/{patient}")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation(patient), "request": {"method": "POST", "url": "Observation"}}]
        * 2,
    }
    assert fhir.post(stack.fhir_base, json=bundle, timeout=30).status_code == 200
    assert hook.wait_for(is_event(2)).events_since_start == 2


def test_failing_endpoint_sets_error_and_recovery_sets_active(
    stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver
) -> None:
    patient = pid("f")
    sub_id = start(fhir, stack, hook, f"Observation?patient=Patient/{patient}")

    hook.status = 500
    create(fhir, stack, observation(patient))
    assert hook.wait_for(is_event(1)).answered == 500
    failed = wait_status(fhir, stack, sub_id, "error")
    assert "HTTP 500" in failed["error"]
    status = fhir.get(f"{stack.fhir_base}/Subscription/{sub_id}/$status", timeout=30).json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "error" and params["type"]["valueCode"] == "query-status"
    assert "HTTP 500" in params["error"]["valueCodeableConcept"]["text"]

    hook.status = 200
    create(fhir, stack, observation(patient))
    recovered = hook.wait_for(is_event(2))  # numbering continues: the receiver can see it missed 1
    assert (recovered.parameter("status") or {})["valueCode"] == "error"  # status when it was sent
    active = wait_status(fhir, stack, sub_id, "active")
    assert "error" not in active


def test_failed_handshake_is_error(stack: FhirStack, fhir: requests.Session) -> None:
    with RestHookReceiver(status=503) as refusing:
        created = create(fhir, stack, subscription(refusing.url, "Observation?patient=x"))
        refusing.wait_for(lambda n: n.type == "handshake")
        assert "HTTP 503" in wait_status(fhir, stack, created["id"], "error")["error"]
    unreachable = create(fhir, stack, subscription(closed_port_url(), "Observation?patient=x"))
    assert "failed" in wait_status(fhir, stack, unreachable["id"], "error")["error"]


def test_status_operation_counts_events(
    stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver
) -> None:
    patient = pid("g")
    sub_id = start(fhir, stack, hook, f"Observation?patient=Patient/{patient}")
    create(fhir, stack, observation(patient))
    create(fhir, stack, observation(patient))
    hook.wait_for(is_event(2))
    bundle = fhir.get(f"{stack.fhir_base}/Subscription/{sub_id}/$status", timeout=30).json()
    assert bundle["type"] == "searchset"
    params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "2"
    assert params["status"]["valueCode"] == "active"
    assert fhir.get(f"{stack.fhir_base}/Subscription/nope/$status", timeout=30).status_code == 404


def test_deleted_or_off_subscriptions_stop_notifying(
    stack: FhirStack, fhir: requests.Session, hook: RestHookReceiver
) -> None:
    patient = pid("h")
    sub_id = start(fhir, stack, hook, f"Observation?patient=Patient/{patient}")
    assert fhir.delete(f"{stack.fhir_base}/Subscription/{sub_id}", timeout=30).ok
    off = create(fhir, stack, subscription(hook.url, f"Observation?patient=Patient/{patient}", status="off"))
    assert off["status"] == "off"
    create(fhir, stack, observation(patient))
    # a third, live subscription proves deliveries still happen; the first two stay silent
    live = start(fhir, stack, hook, f"Observation?patient=Patient/{patient}")
    create(fhir, stack, observation(patient))
    note = hook.wait_for(is_event(1))
    assert note.subscription.endswith(f"/Subscription/{live}")
    assert [
        n.subscription.rsplit("/", 1)[1] for n in hook.notifications if n.type == "event-notification"
    ] == [live]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"criteria": "Observation?patient=123"}, "supported topics"),
        ({"criteria": "http://example.org/fhir/SubscriptionTopic/nope"}, "supported topics"),
        ({"filter": "Patient?name=x"}, "must start with 'Observation?'"),
        ({"filter": "Observation?foo=bar"}, "foo"),
        ({"filter": "Observation?patient=1&_sort=date"}, "_sort"),
        ({"channel.type": "websocket"}, "rest-hook"),
        ({"channel.endpoint": "http://example.com/hook"}, "loopback"),
        ({"channel.endpoint": "not a url"}, "absolute URL"),
        ({"channel.payload": "application/fhir+xml"}, "payload"),
        ({"content": "everything"}, "content"),
        ({"channel.header": ["no colon here"]}, "Name: value"),
    ],
)
def test_invalid_subscriptions_are_400(
    stack: FhirStack, fhir: requests.Session, change: dict[str, Any], needle: str
) -> None:
    sub = subscription("http://127.0.0.1:9/hook", change.get("filter", "Observation?patient=1"))
    if "content" in change:
        sub = subscription("http://127.0.0.1:9/hook", "Observation?patient=1", content=change["content"])
    for key, value in change.items():
        if key.startswith("channel."):
            sub["channel"][key.split(".", 1)[1]] = value
        elif key == "criteria":
            sub["criteria"] = value
    resp = fhir.post(f"{stack.fhir_base}/Subscription", json=sub, timeout=30)
    assert resp.status_code == 400, resp.text
    oo = resp.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert needle in oo["issue"][0]["details"]["text"]


# ------------------------------------------------------------------ fallback: polling


@pytest.fixture(scope="module")
def polling(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    with fhir_stack.start_extra({"FHIR_SUBSCRIPTIONS": "false"}, seeds=[]) as extra:
        yield extra


def test_subscriptions_can_be_switched_off(polling: FhirStack) -> None:
    assert polling.info["subscriptions"] is False and polling.info["subscription_topics"] == []
    cap = requests.get(f"{polling.fhir_base}/metadata", timeout=30).json()
    assert "Subscription" not in {r["type"] for r in cap["rest"][0]["resource"]}
    assert not any("subscriptions-backport" in url for url in cap["instantiates"])
    with polling.session() as sess:
        refused = sess.post(
            f"{polling.fhir_base}/Subscription",
            json=subscription("http://127.0.0.1:9/x", "Observation?patient=1"),
        )
        assert refused.status_code == 400
        issue = refused.json()["issue"][0]
        assert issue["code"] == "not-supported" and "FHIR_SUBSCRIPTIONS=false" in issue["diagnostics"]
        in_batch = sess.post(
            polling.fhir_base,
            json={
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {
                        "resource": subscription("http://127.0.0.1:9/x", "Observation?patient=1"),
                        "request": {"method": "POST", "url": "Subscription"},
                    }
                ],
            },
        )
        assert in_batch.json()["entry"][0]["response"]["status"].startswith("400")
        assert sess.get(f"{polling.fhir_base}/Subscription", timeout=30).json()["total"] == 0


def test_last_updated_polling_sees_every_new_write(polling: FhirStack) -> None:
    patient = pid("poll")
    with polling.session() as sess:
        base = f"{polling.fhir_base}/Observation"
        first = create(sess, polling, observation(patient))
        mark = first["meta"]["lastUpdated"]
        time.sleep(0.01)
        # A client-supplied meta.lastUpdated in the past must not hide a new resource from polling.
        stale = create(sess, polling, observation(patient, meta={"lastUpdated": "2001-01-01T00:00:00Z"}))
        assert stale["meta"]["lastUpdated"] > mark
        time.sleep(0.01)
        first["status"] = "amended"
        updated = sess.put(f"{base}/{first['id']}", json=first, timeout=30).json()

        page = sess.get(
            base,
            params={"patient": patient, "_lastUpdated": f"gt{mark}", "_sort": "_lastUpdated"},
            timeout=30,
        ).json()
        assert [e["resource"]["id"] for e in page["entry"]] == [stale["id"], first["id"]]
        assert page["entry"][1]["resource"]["meta"]["versionId"] == updated["meta"]["versionId"]
        newest = updated["meta"]["lastUpdated"]
        empty = sess.get(base, params={"patient": patient, "_lastUpdated": f"gt{newest}"}, timeout=30).json()
        assert empty["total"] == 0
        inclusive = sess.get(
            base, params={"patient": patient, "_lastUpdated": f"ge{newest}"}, timeout=30
        ).json()
        assert [e["resource"]["id"] for e in inclusive["entry"]] == [first["id"]]
        descending = sess.get(base, params={"patient": patient, "_sort": "-_lastUpdated"}, timeout=30).json()
        assert [e["resource"]["id"] for e in descending["entry"]] == [first["id"], stale["id"]]
