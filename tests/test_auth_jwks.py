"""JWKS retrieval for client JWTs against real loopback servers: a `jku` is fetched only when it is on the
client's allowlist (an off-list jku is refused without even a TCP connection), https outside development
(a real TLS server with a test CA), http on loopback in development, cached, refreshed on an unknown kid
(key rotation) at most once per CDS_JWKS_MIN_REFRESH_S, and a failing JWKS never opens the door."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import create_app
from cds_service.auth.jwks import JwksCache
from cds_service.errors import ConfigurationError
from tests.auth_client import (
    JwksServer,
    LoopbackCertificate,
    SigningKey,
    auth_config,
    bearer,
    client_entry,
    recording,
    self_signed,
    token,
)

K1, K2 = SigningKey.ec("2026-01"), SigningKey.rsa("2026-02")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_jwks(certificate: LoopbackCertificate) -> Iterator[JwksServer]:
    with JwksServer(keys=[K1.jwk()], certificate=certificate) as server:
        yield server


def jku_app(tmp_path: Path, server: JwksServer, **settings: Any) -> Flask:
    entry = client_entry(jku_allowlist=[server.url])
    return create_app(auth_config(tmp_path, entry, JWKS_SESSION=server.session(), **settings))


def discovery(app: Flask, key: SigningKey, **headers: Any) -> int:
    return app.test_client().get("/cds-services", headers=bearer(token(key, headers=headers))).status_code


def test_an_allowlisted_https_jku_is_fetched_once_and_cached(tmp_path: Path, https_jwks: JwksServer) -> None:
    app = jku_app(tmp_path, https_jwks)
    assert [discovery(app, K1, jku=https_jwks.url) for _ in range(5)] == [200] * 5
    assert https_jwks.requests == ["/jwks.json"]


def test_a_jku_off_the_allowlist_is_never_contacted(
    tmp_path: Path, https_jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = jku_app(tmp_path, https_jwks)
    with recording() as attacker:
        for url in (
            attacker.url("https", "/jwks.json"),
            attacker.url("http", "/jwks.json"),
            https_jwks.url + "?x=1",  # not the exact allowlisted URL
            https_jwks.url.replace("127.0.0.1", "localhost"),
        ):
            with caplog.at_level(logging.WARNING, logger="cds_service"):
                assert discovery(app, K1, jku=url) == 401
    assert attacker.connections == 0
    assert https_jwks.requests == []
    reasons = [
        str(r.__dict__["reason"]) for r in caplog.records if r.getMessage() == "client authentication failed"
    ]
    assert len(reasons) == 4 and all("not on the allowlist" in reason for reason in reasons)


def test_https_is_required_outside_development(tmp_path: Path) -> None:
    with JwksServer(keys=[K1.jwk()]) as plain, pytest.raises(ConfigurationError, match="must be https"):
        jku_app(tmp_path, plain)


def test_http_jku_on_loopback_in_development_mode(tmp_path: Path) -> None:
    with JwksServer(keys=[K1.jwk()]) as plain:
        app = jku_app(tmp_path, plain, CDS_DEV_MODE=True)
        assert discovery(app, K1, jku=plain.url) == 200
        assert discovery(app, K1) == 401  # no jku and no other keys: nothing to verify with


def test_a_configured_jwks_url_is_used_without_jku(tmp_path: Path, https_jwks: JwksServer) -> None:
    entry = client_entry(jwks_url=https_jwks.url)
    app = create_app(auth_config(tmp_path, entry, JWKS_SESSION=https_jwks.session()))
    assert discovery(app, K1) == 200
    assert discovery(app, K1, jku=https_jwks.url) == 401  # a jku must still be on the allowlist


def test_key_rotation_by_kid(tmp_path: Path, https_jwks: JwksServer) -> None:
    app = jku_app(tmp_path, https_jwks, CDS_JWKS_MIN_REFRESH_S="0")
    assert discovery(app, K1, jku=https_jwks.url) == 200
    https_jwks.keys = [K1.jwk(), K2.jwk()]  # the client publishes its next key, then signs with it
    assert discovery(app, K2, jku=https_jwks.url) == 200
    https_jwks.keys = [K2.jwk()]  # the old key is withdrawn: cached keys are replaced on the next refresh
    assert discovery(app, SigningKey.ec("2026-03"), jku=https_jwks.url) == 401  # unknown kid: refetch
    assert discovery(app, K1, jku=https_jwks.url) == 401
    assert len(https_jwks.requests) == 4


def test_unknown_kids_cannot_flood_the_jwks_server(tmp_path: Path, https_jwks: JwksServer) -> None:
    app = jku_app(tmp_path, https_jwks)  # default: at most one fetch per 60 s
    assert discovery(app, K1, jku=https_jwks.url) == 200
    statuses = [discovery(app, SigningKey.ec(f"made-up-{i}"), jku=https_jwks.url) for i in range(20)]
    assert statuses == [401] * 20
    assert len(https_jwks.requests) == 1


def test_concurrent_cold_requests_fetch_once(tmp_path: Path, https_jwks: JwksServer) -> None:
    app = jku_app(tmp_path, https_jwks)
    tokens = [token(K1, headers={"jku": https_jwks.url}) for _ in range(8)]
    statuses: list[int] = []

    def call(jwt_text: str) -> None:
        statuses.append(app.test_client().get("/cds-services", headers=bearer(jwt_text)).status_code)

    threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * 8 and len(https_jwks.requests) == 1


@pytest.mark.parametrize(
    ("status", "keys"),
    [
        (500, [K1.jwk()]),
        (302, [K1.jwk()]),
        (200, [{"kty": "oct", "kid": K1.kid, "k": "c2VjcmV0"}]),  # an HMAC key is never usable
        (200, [{**K1.jwk(), "alg": "HS256"}]),
        (200, [{**K1.jwk(), "d": "c2VjcmV0"}]),  # private material is refused
    ],
)
def test_a_bad_jwks_response_refuses_the_token(
    tmp_path: Path, certificate: LoopbackCertificate, status: int, keys: list[dict[str, Any]]
) -> None:
    with JwksServer(keys=keys, certificate=certificate, status=status) as server:
        app = jku_app(tmp_path, server)
        assert discovery(app, K1, jku=server.url) == 401


def test_an_untrusted_certificate_is_refused(tmp_path: Path, https_jwks: JwksServer) -> None:
    app = create_app(auth_config(tmp_path, client_entry(jku_allowlist=[https_jwks.url])))  # default CA store
    assert discovery(app, K1, jku=https_jwks.url) == 401


def test_stale_keys_survive_a_failed_refresh(certificate: LoopbackCertificate) -> None:
    now = [0.0]
    with JwksServer(keys=[K1.jwk()], certificate=certificate) as server:
        cache = JwksCache(
            server.session(), ttl_s=10, min_refresh_s=1, timeout_s=2, dev_mode=False, clock=lambda: now[0]
        )
        assert cache.key(server.url, K1.kid) is not None
        server.status = 503
        now[0] = 11.0  # past the TTL: a refresh is attempted and fails
        assert cache.key(server.url, K1.kid) is not None
        assert cache.fetches == 2


def test_pinned_keys_are_used_before_an_allowlisted_jku(tmp_path: Path) -> None:
    """Like the CDS Hooks Sandbox trusted offline: its jku is allowlisted, its key pinned; nothing fetched."""
    with recording() as jku_host:
        url = jku_host.url("https", "/.well-known/jwks.json")
        app = create_app(auth_config(tmp_path, client_entry(K1, jku_allowlist=[url])))
        assert discovery(app, K1, jku=url) == 200
        assert discovery(app, K2, jku=url) == 401  # not pinned: fetched from the jku, which fails
    assert jku_host.connections == 1
