"""What an anonymous SMART launch may cost (issue 18, item 5): nothing at all for a FHIR server that is not
allowlisted (no database row, no request to it); for an allowlisted one, one discovery request per server
and cache lifetime, not one per launch; and every launch counts against the client's rate limit (429)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import func, select

from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.smart.dbstore import pending_table, sessions_table
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config
from tests.loopback_http import LoopbackServer, Reply, Seen


def rows(app: Flask) -> tuple[int, int]:
    with get_state(app).feedback.engine.connect() as connection:
        sessions = connection.execute(select(func.count()).select_from(sessions_table)).scalar_one()
        pending = connection.execute(select(func.count()).select_from(pending_table)).scalar_one()
    return sessions, pending


def smart_configuration(base: str) -> dict[str, Any]:
    return {
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr"],
    }


def test_a_launch_for_a_server_not_allowlisted_costs_nothing(tmp_path: Path) -> None:
    """Production mode: the named server receives not one request and the database not one row."""
    app = create_app(
        dev_config(
            tmp_path,
            CDS_DEV_MODE=False,
            CDS_PUBLIC_BASE_URL="https://cds.example.org",
            CDS_TRUSTED_CLIENTS_FILE=str(PROJECT_ROOT / "config" / "trusted-clients.example.json"),
            SMART_SESSION_KEY=Fernet.generate_key().decode(),
            SMART_ISS_ALLOWLIST="https://ehr.example.org/fhir",
        )
    )
    client = app.test_client()
    with LoopbackServer(lambda seen: Reply(body=smart_configuration("http://x"))) as ehr:
        before = rows(app)
        for _ in range(20):
            launch = client.get("/smart/launch", query_string={"iss": f"{ehr.base_url}/fhir", "launch": "l1"})
            standalone = client.get("/smart/standalone", query_string={"iss": f"{ehr.base_url}/fhir"})
            assert launch.status_code == standalone.status_code == 400
            assert "iss-not-allowed" in launch.get_data(as_text=True)
        assert ehr.seen == []
    assert rows(app) == before == (0, 0)
    assert "Set-Cookie" not in launch.headers


def test_discovery_is_cached_per_server(tmp_path: Path) -> None:
    def ehr_handler(seen: Seen) -> Reply:
        return Reply(body=smart_configuration(ehr_base[0]), content_type="application/json")

    ehr_base: list[str] = []
    with LoopbackServer(ehr_handler) as ehr:
        ehr_base.append(ehr.base_url)
        app = create_app(dev_config(tmp_path))
        client = app.test_client()
        for n in range(5):
            response = client.get(
                "/smart/launch", query_string={"iss": f"{ehr.base_url}/fhir", "launch": f"l{n}"}
            )
            assert response.status_code == 302
            assert response.headers["Location"].startswith(f"{ehr.base_url}/authorize?")
        assert [seen.path for seen in ehr.seen] == ["/fhir/.well-known/smart-configuration"]


def test_discovery_failures_are_not_cached(tmp_path: Path) -> None:
    answers = iter([Reply(status=503, body=b"busy")])

    def ehr_handler(seen: Seen) -> Reply:
        return next(answers, Reply(body=smart_configuration(ehr_base[0]), content_type="application/json"))

    ehr_base: list[str] = []
    with LoopbackServer(ehr_handler) as ehr:
        ehr_base.append(ehr.base_url)
        client = create_app(dev_config(tmp_path)).test_client()
        query = {"iss": f"{ehr.base_url}/fhir", "launch": "l1"}
        assert client.get("/smart/launch", query_string=query).status_code == 502
        assert client.get("/smart/launch", query_string=query).status_code == 302
        assert len(ehr.seen) == 2


def test_launches_are_rate_limited_per_client(tmp_path: Path) -> None:
    with LoopbackServer(lambda seen: Reply(status=404)) as ehr:
        app = create_app(dev_config(tmp_path, CDS_RATE_LIMIT="4/minute"))
        client = app.test_client()
        query = {"iss": f"{ehr.base_url}/fhir", "launch": "l1"}
        statuses = [client.get("/smart/launch", query_string=query).status_code for _ in range(2)]
        statuses += [
            client.get("/smart/standalone", query_string={"iss": query["iss"]}).status_code for _ in range(2)
        ]
        seen, before = len(ehr.seen), rows(app)
        refused = client.get("/smart/launch", query_string=query)
        assert statuses == [502] * 4  # the (unusable) server was asked: the launches counted
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "http-429" in refused.get_data(as_text=True) or "Too Many Requests" in refused.get_data(
            as_text=True
        )
        assert len(ehr.seen) == seen and rows(app) == before  # refused before any work
        other = client.get(
            "/smart/launch", query_string=query, environ_overrides={"REMOTE_ADDR": "127.0.0.9"}
        )
        assert other.status_code == 502


def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(tmp_path: Path) -> None:
    """CDS_TRUSTED_PROXY_HOPS=1 (the shipped nginx): clients behind the proxy are told apart."""
    client = create_app(
        dev_config(tmp_path, CDS_RATE_LIMIT="1/minute", CDS_TRUSTED_PROXY_HOPS=1)
    ).test_client()
    body = {"hook": "patient-view", "scenario": "classic-iec-hs"}

    def build(forwarded_for: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return client.post("/preview/hook-request", json=body, headers=headers).status_code

    assert [build("198.51.100.1"), build("198.51.100.2"), build("198.51.100.1")] == [200, 200, 429]
