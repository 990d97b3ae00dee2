"""Trusted-clients configuration: secure by default (a production server refuses to start without trusted
clients), development mode announced loudly, the file (JSON or YAML) or inline document validated at start
with errors naming the variable, the client and the field."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service import create_app
from cds_service.auth import JwtClientAuth, check_trust_configuration
from cds_service.auth.clients import build_registry
from cds_service.config import Settings
from cds_service.datafiles import PROJECT_ROOT
from cds_service.errors import ConfigurationError
from cds_service.ops.config_check import check_configuration
from cds_service.web.app import DEV_MODE_AUTH_WARNING, DEV_MODE_WARNING
from cds_service.web.security import ClientFhirServerPolicy, allow_all, deny_all
from tests.auth_client import ISSUER, SigningKey, auth_config, bearer, client_entry, token
from tests.plugins.fhir_stack import free_port

EXAMPLE = PROJECT_ROOT / "config" / "trusted-clients.example.json"
KEY = SigningKey.ec("k1")
PROD_ENV = {"CDS_DEV_MODE": "0", "CDS_PUBLIC_BASE_URL": "https://cds.example.org"}


def clear_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> None:
    for name in ("CDS_TRUSTED_CLIENTS_FILE", "CDS_TRUSTED_CLIENTS", "CDS_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_a_production_server_refuses_to_start_without_trusted_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_env(monkeypatch, tmp_path, **PROD_ENV)
    with pytest.raises(ConfigurationError) as caught:
        create_app()  # what `cds-service serve` does
    assert caught.value.variable == "CDS_TRUSTED_CLIENTS_FILE"
    assert "no trusted CDS clients configured" in str(caught.value) and "--dev" in str(caught.value)
    assert check_configuration() == 2
    assert "CDS_TRUSTED_CLIENTS_FILE" in capsys.readouterr().err


def test_a_production_server_starts_with_the_example_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_env(monkeypatch, tmp_path, **PROD_ENV, CDS_TRUSTED_CLIENTS_FILE=str(EXAMPLE))
    app = create_app()
    assert isinstance(app.config["CLIENT_AUTH"], JwtClientAuth)
    assert isinstance(app.config["FHIR_SERVER_POLICY"], ClientFhirServerPolicy)
    assert app.test_client().get("/cds-services").status_code == 401
    assert check_configuration() == 0
    assert "JWT, trusted issuers: https://ehr.hospital.example.org" in capsys.readouterr().out


def test_an_app_built_for_tests_without_clients_fails_closed(tmp_path: Path) -> None:
    config = auth_config(tmp_path)
    del config["CDS_TRUSTED_CLIENTS"]
    app = create_app(config)
    assert app.config["CLIENT_AUTH"] is deny_all
    assert app.test_client().get("/cds-services").status_code == 401


def test_development_mode_without_clients_is_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        app = create_app({"CDS_DEV_MODE": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}"})
    assert app.config["CLIENT_AUTH"] is allow_all
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert DEV_MODE_WARNING in warnings and DEV_MODE_AUTH_WARNING not in warnings


def test_development_mode_with_clients_verifies_jwts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        app = create_app(auth_config(tmp_path, client_entry(KEY), CDS_DEV_MODE=True))
    assert DEV_MODE_AUTH_WARNING in [r.getMessage() for r in caplog.records]
    client = app.test_client()
    assert client.get("/cds-services").status_code == 401
    assert client.get("/cds-services", headers=bearer(token(KEY))).status_code == 200


def test_injected_client_auth_wins(tmp_path: Path) -> None:
    app = create_app(auth_config(tmp_path, client_entry(KEY), CLIENT_AUTH=allow_all))
    assert app.config["CLIENT_AUTH"] is allow_all
    assert isinstance(app.config["FHIR_SERVER_POLICY"], ClientFhirServerPolicy)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_the_file_may_be_json_or_yaml(tmp_path: Path, suffix: str) -> None:
    document = {"clients": [client_entry(KEY, fhir_servers=["https://EHR.example.org:443/fhir/"])]}
    path = tmp_path / f"clients{suffix}"
    path.write_text(json.dumps(document) if suffix == ".json" else yaml.safe_dump(document))
    settings = Settings.from_env({**PROD_ENV, "CDS_TRUSTED_CLIENTS_FILE": str(path)})
    registry = check_trust_configuration(settings)
    assert registry is not None and registry.issuers == [ISSUER]
    client = registry.find(ISSUER)
    assert client is not None and client.fhir_servers == {"https://ehr.example.org/fhir"}
    assert client.algorithms == {"ES384", "RS384"} and client.tenants is None


def test_the_example_file_is_valid_in_production() -> None:
    registry = build_registry("CDS_TRUSTED_CLIENTS_FILE", json.loads(EXAMPLE.read_text()), dev_mode=False)
    assert len(registry) == 2


def test_file_and_inline_together_are_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Settings.from_env({**PROD_ENV, "CDS_TRUSTED_CLIENTS_FILE": str(EXAMPLE), "CDS_TRUSTED_CLIENTS": "{}"})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file") as caught:
        Settings.from_env({**PROD_ENV, "CDS_TRUSTED_CLIENTS_FILE": str(tmp_path / "nope.json")})
    assert caught.value.variable == "CDS_TRUSTED_CLIENTS_FILE"


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("{not json", ".json", "not valid JSON"),
        ("clients: [\n  - issuer: x\n   bad", ".yaml", "not valid YAML"),
        ("[]", ".json", "expected object"),
    ],
)
def test_unparsable_files_are_reported(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    path = tmp_path / f"clients{suffix}"
    path.write_text(text)
    settings = Settings.from_env({**PROD_ENV, "CDS_TRUSTED_CLIENTS_FILE": str(path)})
    with pytest.raises(ConfigurationError, match=message):
        check_trust_configuration(settings)


RSA_1024 = SigningKey.rsa("weak", bits=1024)


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ({"jwks": {"keys": [KEY.jwk()]}}, "clients[0].issuer: missing required field 'issuer'"),
        (client_entry(), "needs its keys"),
        (client_entry(KEY, algorithms=["HS256"]), "clients[0].algorithms[0]: must be one of"),
        (client_entry(KEY, algorithms=["none"]), "clients[0].algorithms[0]: must be one of"),
        (client_entry(KEY, algorithms=["RS384"]), "key 'k1' fits none of the algorithms"),
        (
            {"issuer": ISSUER, "jwks": {"keys": [{**KEY.jwk(), "d": "c2VjcmV0"}]}},
            "clients[0].jwks.keys[0]: contains a field that is not allowed",
        ),
        ({"issuer": ISSUER, "jwks": {"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}}, "keys[0]"),
        ({"issuer": ISSUER, "jwks": {"keys": [RSA_1024.jwk()]}}, "RSA key shorter than 2048 bits"),
        ({"issuer": ISSUER, "jwks": {"keys": [{**KEY.jwk(), "alg": "ES256"}]}}, "does not fit its key"),
        ({"issuer": ISSUER, "jwks": {"keys": [{**KEY.jwk(), "x": "AAAA"}]}}, "JWK 'k1' is malformed"),
        (client_entry(KEY, fhir_servers=["http://ehr.example.org/fhir"]), "fhir_servers: 'http://ehr"),
        (client_entry(KEY, fhir_servers=["http://127.0.0.1:8080/fhir"]), "must be https (outside dev"),
        (client_entry(KEY, fhir_servers=["https://u:p@ehr.example.org/fhir"]), "fhir_servers[0]: does not"),
        (client_entry(jku_allowlist=["http://ehr.example.org/jwks"]), "jku_allowlist: 'http://ehr"),
        (client_entry(jwks_url="ftp://ehr.example.org/jwks"), "clients[0].jwks_url: does not match"),
        (client_entry(KEY, tenants=[]), "clients[0].tenants: must not be empty"),
        (client_entry(KEY, issuer="https://sandbox.cds-hooks.org"), "development mode only"),
        (client_entry(KEY, colour="blue"), "clients[0]: "),
    ],
)
def test_invalid_clients_are_named(client: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_registry("CDS_TRUSTED_CLIENTS", {"clients": [client]}, dev_mode=False)
    assert caught.value.variable == "CDS_TRUSTED_CLIENTS"
    assert message in str(caught.value)


def test_duplicate_issuers_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="configured twice"):
        build_registry("X", {"clients": [client_entry(KEY), client_entry(KEY)]}, dev_mode=False)


def test_development_mode_allows_http_on_loopback_only() -> None:
    loopback = client_entry(KEY, fhir_servers=["http://127.0.0.1:8090/fhir"], jwks_url="http://localhost:1/j")
    assert len(build_registry("X", {"clients": [loopback]}, dev_mode=True)) == 1
    remote = client_entry(KEY, fhir_servers=["http://ehr.example.org/fhir"])
    with pytest.raises(ConfigurationError, match="https or http on loopback"):
        build_registry("X", {"clients": [remote]}, dev_mode=True)
    sandbox = client_entry(KEY, issuer="https://sandbox.cds-hooks.org")
    assert len(build_registry("X", {"clients": [sandbox]}, dev_mode=True)) == 1


def test_cds_service_serve_refuses_to_start_without_trusted_clients(tmp_path: Path) -> None:
    """The real entry point: exit status 2 and the reason on stderr, before any port is bound."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "DATABASE_URL"}
    env.update(PROD_ENV, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    cli = Path(sys.executable).with_name("cds-service")
    result = subprocess.run(
        [str(cli), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot start: CDS_TRUSTED_CLIENTS_FILE: no trusted CDS clients configured" in result.stderr
