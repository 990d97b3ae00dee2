"""Smoke tests of the PostgreSQL and headless-browser fixtures (tests/plugins/)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page

from tests.plugins.postgres import PostgresServer

PAGE_HTML = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>infra smoke</title></head>
<body>
  <h1 id="title">Test bed</h1>
  <button id="go" onclick="document.getElementById('out').textContent = 'clicked ' +
    (++window.clicks)">Go</button>
  <p id="out">not clicked</p>
  <script>window.clicks = 0;</script>
</body></html>"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE_HTML)))
        self.end_headers()
        self.wfile.write(PAGE_HTML)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@pytest.fixture
def local_site() -> Iterator[str]:
    """A tiny page served by http.server on a free 127.0.0.1 port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_postgres_roundtrip(postgres_url: str, postgres_server: PostgresServer) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    assert f"@127.0.0.1:{postgres_server.port}/" in postgres_url
    assert postgres_server.port != 5432
    engine = sa.create_engine(postgres_url)
    try:
        meta = sa.MetaData()
        items = sa.Table(
            "infra_smoke",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("payload", sa.JSON),
        )
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                items.insert(),
                [
                    {"id": 1, "name": "ferritin", "payload": {"value": 12000}},
                    {"id": 2, "name": "fibrinogen", "payload": {"value": 140}},
                ],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.name, items.c.payload).order_by(items.c.id)).all()
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            listen = conn.execute(sa.text("SHOW listen_addresses")).scalar_one()
        assert [(r.name, r.payload["value"]) for r in rows] == [
            ("ferritin", 12000),
            ("fibrinogen", 140),
        ]
        assert int(str(version).split(".")[0]) >= 13
        assert listen == "127.0.0.1"
        meta.drop_all(engine)
    finally:
        engine.dispose()


def test_postgres_fresh_database_per_test(postgres_database_url: str) -> None:
    engine = sa.create_engine(postgres_database_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            ).scalar_one()
            current = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        assert tables == 0
        assert postgres_database_url.endswith(f"/{current}")
    finally:
        engine.dispose()


def test_browser_click_and_screenshot(page: Page, local_site: str, screenshot: Callable[[str], Path]) -> None:
    page.goto(local_site)
    assert page.title() == "infra smoke"
    assert page.viewport_size == {"width": 1280, "height": 800}
    page.click("#go")
    page.click("#go")
    assert page.text_content("#out") == "clicked 2"
    path = screenshot("clicked")
    assert path.parent.name == "test-artifacts"
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_data_url_and_isolated_contexts(browser: Browser, page: Page, local_site: str) -> None:
    page.goto("data:text/html,<p id=x>hello</p>")
    assert page.text_content("#x") == "hello"
    assert int(browser.version.split(".")[0]) >= 100

    page.goto(local_site)
    page.evaluate("localStorage.setItem('k', 'v')")
    assert page.evaluate("localStorage.getItem('k')") == "v"
    other = browser.new_context()
    try:
        other_page = other.new_page()
        other_page.goto(local_site)
        assert other_page.evaluate("localStorage.getItem('k')") is None
    finally:
        other.close()
