"""The jti replay store is shared through the database: a token accepted by one app instance (worker) is a
replay for every other instance on the same database, on SQLite and on a real PostgreSQL server, and a race
of identical tokens has exactly one winner. Expired rows are purged."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine

from cds_service import create_app
from cds_service.auth.replay import ReplayStore
from cds_service.web.state import get_state
from tests.auth_client import ISSUER, SigningKey, auth_config, bearer, client_entry, token

KEY = SigningKey.ec("replay-key")


def instances(tmp_path: Path, database_url: str, count: int = 2) -> list[Flask]:
    return [
        create_app(auth_config(tmp_path, client_entry(KEY), DATABASE_URL=database_url)) for _ in range(count)
    ]


def status(app: Flask, jwt_text: str) -> int:
    return app.test_client().get("/cds-services", headers=bearer(jwt_text)).status_code


def replay_across(apps: list[Flask]) -> None:
    first, second = apps
    jwt_text = token(KEY)
    assert status(first, jwt_text) == 200
    assert status(second, jwt_text) == 401
    assert status(first, jwt_text) == 401
    other = token(KEY)
    assert status(second, other) == 200 and status(first, other) == 401


def race(apps: list[Flask], attempts: int = 24) -> list[int]:
    jwt_text = token(KEY)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda i: status(apps[i % len(apps)], jwt_text), range(attempts)))


def dispose(apps: list[Flask]) -> None:
    for app in apps:
        get_state(app).feedback.engine.dispose()


def test_sqlite_two_instances_share_the_replay_store(tmp_path: Path) -> None:
    apps = instances(tmp_path, f"sqlite:///{tmp_path / 'shared.sqlite3'}")
    replay_across(apps)
    assert sorted(race(apps)) == [200] + [401] * 23
    dispose(apps)


def test_postgresql_two_instances_share_the_replay_store(tmp_path: Path, postgres_database_url: str) -> None:
    apps = instances(tmp_path, postgres_database_url)
    replay_across(apps)
    assert sorted(race(apps)) == [200] + [401] * 23
    dispose(apps)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_expired_rows_are_purged_and_a_dead_jti_may_return(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'r.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_database_url")
    )
    engine = create_engine(url)
    now = [1_000_000.0]
    store = ReplayStore(engine, clock=lambda: now[0])
    assert store.claim(ISSUER, "a", expires_at=1_000_100)
    assert not store.claim(ISSUER, "a", expires_at=1_000_100)
    assert store.claim(ISSUER, "b", expires_at=1_000_010)
    now[0] = 1_000_050.0
    assert store.purge() == 1 and store.count() == 1
    now[0] = 1_000_200.0
    assert store.claim(ISSUER, "a", expires_at=1_000_300)  # the old token is long dead
    engine.dispose()


def test_replay_rows_expire_with_the_token(tmp_path: Path) -> None:
    apps = instances(tmp_path, f"sqlite:///{tmp_path / 'exp.sqlite3'}", count=1)
    minted = time.time()  # the token's exp is int(minted + 30); a loaded machine may take seconds after
    assert status(apps[0], token(KEY, lifetime=30)) == 200
    store = get_state(apps[0]).feedback
    with store.engine.connect() as connection:
        (expires_at,) = connection.exec_driver_sql("SELECT expires_at FROM cds_jwt_replay").one()
    after = time.time()
    assert int(minted + 30) + 60 <= expires_at <= int(after + 30) + 60 + 2  # exp + leeway (+ rounding)
    dispose(apps)
