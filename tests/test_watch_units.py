"""Watch list pieces without a FHIR server: what counts as a change, retry delays, watermarks, the
sparkline, the servers and site-list files, the CDS_WATCH_* settings and the webhook signature (verified by
the Standard Webhooks reference verifier, delivered to a real loopback receiver)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook, WebhookVerificationError

from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.watch.notify import DeliveryError, fhir_resource, retry_delay, send_webhook
from cds_service.watch.poll import diff, format_instant
from cds_service.watch.servers import build_registry, default_scopes, system_permissions
from cds_service.watch.sitelist import load_list
from cds_service.watch.sparkline import sparkline
from cds_service.watch.watcher import rises
from tests.plugins.rest_hook import RestHookReceiver
from tests.plugins.smart_backend import generate_backend_client
from tests.watch_helpers import new_secret

BASE = "https://ehr.example.org/fhir"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ((None, None), ("possible", None), True),
        ((None, None), ("met", 1), True),
        (("not-met", None), ("possible", None), True),
        (("indeterminate", None), ("not-applicable", None), False),
        (("possible", None), ("met", 1), True),
        (("met", 1), ("met", 2), True),
        (("met", 2), ("met", 2), False),
        (("met", 2), ("met", 1), False),
        (("met", 2), ("possible", None), False),
        (("possible", None), ("not-met", None), False),
        (("met", None), ("met", 1), True),
        (("not-met", None), ("not-met", None), False),
    ],
)
def test_a_change_is_a_rise_of_status_or_grade(
    old: tuple[str | None, int | None], new: tuple[str, int | None], expected: bool
) -> None:
    assert rises(*old, *new) is expected


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap() -> None:
    for attempts, nominal in ((1, 30), (2, 60), (3, 120), (8, 3600), (30, 3600)):
        delays = [retry_delay(attempts) for _ in range(200)]
        assert all(nominal * 0.5 <= d <= nominal for d in delays)
        assert len({round(d, 3) for d in delays}) > 100  # jittered, not synchronised


def obs(rid: str, version: str, updated: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "meta": {"versionId": version, "lastUpdated": updated}}


def test_watermarks_follow_the_server_clock_and_remember_the_overlap() -> None:
    first = [obs("a", "1", "2026-03-01T10:00:00.000Z"), obs("b", "1", "2026-03-01T10:00:04.500Z")]
    fresh, mark = diff(first, None, overlap_s=5)
    assert len(fresh) == 2 and mark["at"] == "2026-03-01T10:00:04.500Z"
    assert mark["keys"] == ["Observation/a/1", "Observation/b/1"]  # both within 5 s of the mark
    # The next poll (ge mark - 5 s) sees both again plus a late commit stamped before the mark, and an update.
    second = [*first, obs("c", "1", "2026-03-01T10:00:03.000Z"), obs("a", "2", "2026-03-01T10:00:09.000Z")]
    fresh, mark2 = diff(second, mark, overlap_s=5)
    assert sorted(r["id"] + r["meta"]["versionId"] for r in fresh) == ["a2", "c1"]
    assert mark2["at"] == "2026-03-01T10:00:09.000Z"
    assert "Observation/a/1" not in mark2["keys"]  # more than 5 s before the new mark
    nothing, mark3 = diff([], mark2, overlap_s=5)
    assert nothing == [] and mark3["at"] == mark2["at"]


def test_instants_in_queries_are_utc_with_milliseconds() -> None:
    assert format_instant(datetime(2026, 3, 1, 10, 0, 4, 500_999, tzinfo=UTC)) == "2026-03-01T10:00:04.500Z"


def test_the_sparkline_scales_into_its_box_and_says_the_trend_in_words() -> None:
    line = sparkline([(0.0, 500.0), (3600.0, 1500.0), (7200.0, 25000.0)])
    xs = [float(p.split(",")[0]) for p in line.points.split()]
    ys = [float(p.split(",")[1]) for p in line.points.split()]
    assert xs == sorted(xs) and xs[0] == 3.0 and xs[-1] == 117.0
    assert ys[0] == 25.0 and ys[-1] == 3.0  # the highest value at the top
    assert line.label == "ferritin rising, last 25,000 ng/mL (3 results)"
    assert sparkline([]).empty and sparkline([(0.0, 1.0)]).label.startswith("ferritin one result")
    assert "falling" in sparkline([(0.0, 900.0), (1.0, 400.0)]).label


def key_file(tmp_path: Path, alg: str = "ES384") -> Path:
    path = tmp_path / f"key-{alg}.pem"
    path.write_text(generate_backend_client("c", alg=alg).private_key_pem(), encoding="utf-8")
    return path


def server(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {
        "fhir_server": BASE,
        "client_id": "cds-watch",
        "private_key_file": str(key_file(tmp_path)),
    } | fields


def test_servers_are_normalized_and_matched_exactly(tmp_path: Path) -> None:
    registry = build_registry(
        {"servers": [server(tmp_path, fhir_server="HTTPS://EHR.example.org:443/fhir/")]},
        dev_mode=False,
        write_back="off",
    )
    found = registry.find("https://ehr.example.org/fhir")
    assert found is not None and found.algorithm == "ES384" and len(found.kid) == 43
    assert registry.find("https://ehr.example.org/fhir-test") is None
    assert registry.find("https://ehr.example.org/fhir/../admin") is None
    assert found.may("Observation", "s") and found.may("Subscription", "c") and not found.may("Flag", "c")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fhir_server": "http://ehr.example.org/fhir"}, "must be https"),
        ({"fhir_server": "https://user:pw@ehr.example.org/fhir"}, "must be https"),
        ({"token_endpoint": "http://auth.example.org/token"}, "token_endpoint"),
        ({"private_key_file": "/nonexistent/key.pem"}, "cannot read"),
        ({"algorithm": "RS384"}, "does not fit"),
        ({"scopes": "patient/*.rs"}, "not a system scope"),
        ({"scopes": "system/Observation.rs"}, "do not cover Patient.r"),
        ({"client_id": ""}, "client_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_servers_stop_the_start(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        build_registry({"servers": [server(tmp_path, **fields)]}, dev_mode=False, write_back="off")
    assert info.value.variable == "CDS_WATCH_SERVERS_FILE"


def test_write_back_needs_its_scope_and_loopback_http_only_in_development(tmp_path: Path) -> None:
    reads = default_scopes("off")
    with pytest.raises(ConfigurationError, match="Communication.c"):
        build_registry(
            {"servers": [server(tmp_path, scopes=reads)]}, dev_mode=False, write_back="Communication"
        )
    assert "system/Communication.cs" in default_scopes("Communication")
    local = server(tmp_path, fhir_server="http://127.0.0.1:8090/fhir")
    assert len(build_registry({"servers": [local]}, dev_mode=True, write_back="off")) == 1
    with pytest.raises(ConfigurationError):
        build_registry({"servers": [local]}, dev_mode=False, write_back="off")
    with pytest.raises(ConfigurationError, match="configured twice"):
        build_registry({"servers": [server(tmp_path), server(tmp_path)]}, dev_mode=False, write_back="off")


def test_system_scope_grammar_v1_and_v2() -> None:
    assert system_permissions(["system/*.read"], "Observation") == {"r", "s"}
    assert system_permissions(["system/Observation.cruds"], "Observation") == set("cruds")
    assert system_permissions(["system/Patient.r", "system/*.write"], "Patient") == {"r", "c", "u", "d"}
    assert system_permissions(["patient/*.read", "system/Condition.rs"], "Observation") == set()


def test_the_site_list_is_validated(tmp_path: Path) -> None:
    registry = build_registry({"servers": [server(tmp_path)]}, dev_mode=False, write_back="off")
    good = tmp_path / "list.yaml"
    good.write_text(
        "patients:\n  - {patientId: p-1, fhirServer: 'https://ehr.example.org/fhir/'}\n"
        "  - {patientId: p-2, fhirServer: 'https://ehr.example.org/fhir',\n"
        "     infusionTime: '2026-03-02T10:00:00Z'}\n",
        encoding="utf-8",
    )
    listed = load_list(good, registry)
    assert [(i.fhir_server, i.patient_id) for i in listed] == [(BASE, "p-1"), (BASE, "p-2")]
    assert listed[1].infusion_at == datetime(2026, 3, 2, 10, tzinfo=UTC).timestamp()
    bad: dict[str, Any]
    for bad in (
        {"patients": [{"patientId": "p 1", "fhirServer": BASE}]},
        {"patients": [{"patientId": "p-1", "fhirServer": "https://other.example.org/fhir"}]},
        {"patients": [{"patientId": "p-1", "fhirServer": BASE, "infusionTime": "2026-03-02T10:00:00"}]},
        {"people": []},
    ):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_list(path, registry)
        assert "p-1" not in str(info.value)  # messages name the entry, never the patient


PROD = {"CDS_PUBLIC_BASE_URL": "https://cds.example.org"}


def test_watch_settings_defaults_and_validation(tmp_path: Path) -> None:
    assert not Settings.from_env(PROD).watch.enabled  # production: off unless configured
    dev = Settings.from_env({"CDS_DEV_MODE": "1"}).watch
    assert dev.enabled and (dev.window_days, dev.poll_s, dev.poll_tight_s) == (30, 900.0, 300.0)
    servers = tmp_path / "servers.json"
    servers.write_text("{}", encoding="utf-8")
    on = Settings.from_env({**PROD, "CDS_WATCH_SERVERS_FILE": str(servers), "CDS_WATCH_WRITE_BACK": "flag"})
    assert on.watch.enabled and on.watch.write_back == "Flag"
    secret = new_secret()
    summary = Settings.from_env(
        {
            "CDS_DEV_MODE": "1",
            "CDS_WATCH_WEBHOOK_URL": "http://127.0.0.1:9/h",
            "CDS_WATCH_WEBHOOK_SECRET": secret,
        }
    ).summary()
    assert summary["watch_webhook_secret"] == "(set, hidden)" and secret not in str(summary)
    for env, variable in (
        ({**PROD, "CDS_WATCH": "1"}, "CDS_WATCH_SERVERS_FILE"),
        (
            {"CDS_DEV_MODE": "1", "CDS_WATCH_POLL_S": "60", "CDS_WATCH_POLL_TIGHT_S": "120"},
            "CDS_WATCH_POLL_TIGHT_S",
        ),
        ({"CDS_DEV_MODE": "1", "CDS_WATCH_LEASE_S": "10"}, "CDS_WATCH_LEASE_S"),
        ({"CDS_DEV_MODE": "1", "CDS_WATCH_WEBHOOK_URL": "http://127.0.0.1:9/h"}, "CDS_WATCH_WEBHOOK_SECRET"),
        ({"CDS_DEV_MODE": "1", "CDS_WATCH_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "CDS_WATCH_WEBHOOK_SECRET"),
        ({"CDS_DEV_MODE": "1", "CDS_WATCH_WRITE_BACK": "email"}, "CDS_WATCH_WRITE_BACK"),
        ({"CDS_DEV_MODE": "1", "CDS_WATCH_WINDOW_DAYS": "0"}, "CDS_WATCH_WINDOW_DAYS"),
        (
            {
                **PROD,
                "CDS_WATCH_SERVERS_FILE": str(servers),
                "CDS_WATCH_WEBHOOK_URL": "http://hooks.example.org",
                "CDS_WATCH_WEBHOOK_SECRET": secret,
            },
            "CDS_WATCH_WEBHOOK_URL",
        ),
    ):
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env(env)
        assert info.value.variable == variable


def test_webhooks_are_signed_per_standard_webhooks_and_refused_answers_fail() -> None:
    secret = new_secret()
    payload = {
        "changeId": "6f1c7f0e-1f5e-4b9e-9d0c-2f7f3f1f0a11",
        "patientId": "p-1",
        "current": {"status": "met"},
    }
    with RestHookReceiver() as receiver, requests.Session() as session:
        send_webhook(session, receiver.url, secret, payload, timeout_s=5)
        note = receiver.wait_for(lambda n: True)
        assert note.headers["webhook-id"] == payload["changeId"]
        assert abs(int(note.headers["webhook-timestamp"]) - time.time()) < 30
        assert Webhook(secret).verify(note.raw, note.headers) == payload
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(note.raw, note.headers)
        tampered = note.raw.replace(b"met", b"mat")
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, note.headers)
        receiver.status = 503
        with pytest.raises(DeliveryError, match="HTTP 503"):
            send_webhook(session, receiver.url, secret, payload, timeout_s=5)


def test_the_write_back_names_the_patient_by_id_and_carries_the_change_id() -> None:
    payload = {
        "changeId": "c-1",
        "patientId": "p-1",
        "current": {"status": "met", "grade": 2, "dayPostInfusion": 12},
        "previous": {"status": "possible", "grade": None},
        "evaluatedAt": "2026-03-14T12:00:00Z",
        "dashboardUrl": "https://cds.example.org/smart/worklist/open/abc",
    }
    communication = fhir_resource("Communication", payload)
    assert communication["subject"] == {"reference": "Patient/p-1"}
    assert communication["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:c-1"}]
    assert "grade 2 on day 12" in communication["payload"][0]["contentString"]
    assert fhir_resource("Flag", payload)["status"] == "active"


def test_a_bulk_load_inside_the_overlap_does_not_overflow_the_mark() -> None:
    many = [obs(f"o{i}", "1", f"2026-03-01T10:00:00.{i % 1000:03d}Z") for i in range(1200)]
    fresh, mark = diff(many, None, overlap_s=5)
    assert len(fresh) == 1200 and mark["overlap"] == 0 and mark["at"] == "2026-03-01T10:00:00.999Z"
    assert mark["keys"] == ["Observation/o999/1"]  # the versions at the newest instant only
    # The next poll asks from the mark itself (overlap 0): it sees that one again, nothing is new.
    again, _ = diff([r for r in many if r["meta"]["lastUpdated"].endswith(".999Z")], mark, overlap_s=5)
    assert again == []
