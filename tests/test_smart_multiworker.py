"""SMART launches against the real server process: ``cds-service serve --dev --workers 2`` (gunicorn master
and two forked workers), once on SQLite and once on PostgreSQL, with the test bed's FHIR and SMART
authorization servers. No key is configured: the one generated in the master must serve both workers.

Each request to the app goes over a keep-alive connection whose server end is held by a chosen worker:
while the connection is accepted, the other worker is paused (SIGSTOP, then SIGCONT at once), and /proc
confirms the owner (the socket's inode in /proc/net/tcp, then the worker whose /proc/<pid>/fd links to it).
So the launch, the callback and the dashboard are served by the workers the test picks, on purpose
different ones. The app exposes nothing for this.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import requests

from cds_service.smart.sessions import COOKIE_NAME
from tests.plugins.fhir_stack import FhirStack, callback_uris, free_port
from tests.plugins.postgres import PostgresServer

CLI = Path(sys.executable).with_name("cds-service")
CLASSIC = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "classic-iec-hs.json"
PATIENT = "classic-iec-hs"
APP_CONTEXT = json.dumps({"patient": PATIENT, "at": "2026-03-15T20:00:00+00:00", "view": "iec-hs"})
START_TIMEOUT_S = 60
LAUNCHES = 5


@dataclass
class Service:
    """One `cds-service serve` process tree."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    database_file: Path | None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return sorted(int(pid) for pid in children.read_text().split())

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own process group only
                self.process.wait(timeout=10)


def start_service(workdir: Path, port: int, database_url: str, database_file: Path | None) -> Service:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "DATABASE_URL"}
    env.update(
        {"DATABASE_URL": database_url, "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "CDS_THREADS": "2"}
    )
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(CLI), "serve", "--dev", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(port, process, log_path, database_file)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{service.log()[-4000:]}")
        try:
            healthy = requests.get(f"{service.base}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            healthy = False
        if healthy and len(service.workers()) == 2:
            return service
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"server not ready within {START_TIMEOUT_S} s:\n{service.log()[-4000:]}")


@pytest.fixture(scope="module")
def smart_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(fhir_stack: FhirStack, smart_port: int) -> Iterator[FhirStack]:
    """A FHIR + SMART stack of its own, with this module's app port registered as redirect URI."""
    with fhir_stack.start_extra({}, seeds=[CLASSIC], redirect_uris=callback_uris(smart_port)) as extra:
        yield extra


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest,
    smart_port: int,
    stack: FhirStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp(f"smart-workers-{request.param}")
    if request.param == "sqlite":
        database = workdir / "service.sqlite3"
        running = start_service(workdir, smart_port, f"sqlite:///{database}", database)
        try:
            yield running
        finally:
            running.stop()
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"smart_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    running = start_service(workdir, smart_port, url, None)
    try:
        yield running
    finally:
        running.stop()
        postgres.drop_database(name)


# ------------------------------------------------------------------ requests to a chosen worker


def socket_owner(service: Service, client_port: int) -> int | None:
    """The worker holding the server end of our connection from `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == service.port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    for pid in service.workers():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:  # closed meanwhile
                continue
    return None


def connection_to(service: Service, worker: int) -> HTTPConnection:
    """A keep-alive connection served by `worker`: the other workers are paused (SIGSTOP) while it is
    accepted and a first /healthz request answered, then resumed; /proc confirms who holds it."""
    others = [pid for pid in service.workers() if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        connection = HTTPConnection("127.0.0.1", service.port, timeout=60)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
    assert response.status == 200 and not response.will_close and connection.sock is not None
    assert socket_owner(service, connection.sock.getsockname()[1]) == worker
    return connection


@dataclass
class Reply:
    status: int
    location: str | None
    body: str
    worker: int


@dataclass
class Browser:
    """The authorization server through requests; the app through connections to chosen workers."""

    auth: requests.Session = field(default_factory=requests.Session)
    session_id: str | None = None
    replies: list[Reply] = field(default_factory=list)

    def app(self, service: Service, worker: int, url: str, form: dict[str, str] | None = None) -> Reply:
        parts = urlsplit(urljoin(service.base, url))
        assert f"{parts.scheme}://{parts.netloc}" == service.base
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Cookie": f"{COOKIE_NAME}={self.session_id}"} if self.session_id else {}
        connection = connection_to(service, worker)
        try:
            if form is None:
                connection.request("GET", target, headers=headers)
            else:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                connection.request("POST", target, body=urlencode(form), headers=headers)
            response = connection.getresponse()
            reply = Reply(response.status, response.getheader("Location"), response.read().decode(), worker)
            for header in response.headers.get_all("Set-Cookie") or []:
                cookie = SimpleCookie(header)
                if COOKIE_NAME in cookie:
                    self.session_id = cookie[COOKIE_NAME].value or None
        finally:
            connection.close()
        self.replies.append(reply)
        return reply

    def to_app(self, url: str, service: Service) -> str:
        """Follows the authorization server's redirects until one leads to the app; returns that URL."""
        for _ in range(15):
            if url.startswith(service.base):
                return url
            response = self.auth.get(url, allow_redirects=False, timeout=30)
            assert response.status_code in (302, 303), (response.status_code, response.text[:500])
            url = urljoin(url, response.headers["Location"])
        raise AssertionError("too many redirects")


def error_code(page: str) -> str | None:
    match = re.search(r'data-error-code="([^"]+)"', page)
    return match.group(1) if match else None


def launch(
    stack: FhirStack, service: Service, browser: Browser, start: int, finish: int
) -> tuple[str, Reply]:
    """EHR launch served by `start`, callback by `finish`, dashboard by `start`; returns the callback URL
    and the dashboard reply."""
    ehr = stack.ehr_launch_url(PATIENT, f"{service.base}/smart/launch", app_context=APP_CONTEXT)
    started = browser.app(service, start, browser.to_app(ehr, service))
    assert started.status == 302 and started.location is not None, started.body[:2000]
    callback = browser.to_app(started.location, service)
    assert urlsplit(callback).path == "/smart/callback"
    signed_in = browser.app(service, finish, callback)
    assert signed_in.status == 303 and signed_in.location == "/smart/dashboard", signed_in.body[:2000]
    page = browser.app(service, start, "/smart/dashboard")
    assert page.status == 200, page.body[:2000]
    assert 'id="iec-hs-status"' in page.body and 'data-status="met"' in page.body
    assert "2026-03-15 20:00 UTC" in page.body  # the launch context, read back on the other worker
    return callback, page


# ------------------------------------------------------------------ tests


def test_launches_succeed_whichever_worker_serves_each_step(stack: FhirStack, service: Service) -> None:
    workers = service.workers()
    assert len(workers) == 2 and service.process.pid not in workers
    callbacks = []
    for i in range(LAUNCHES):
        start, finish = workers[i % 2], workers[(i + 1) % 2]
        browser = Browser()
        callback, _ = launch(stack, service, browser, start, finish)
        assert [r.worker for r in browser.replies] == [start, finish, start]
        callbacks.append(callback)
        # The state was used up on `finish`: replaying the callback on `start` is refused.
        replay = browser.app(service, start, callback)
        assert replay.status == 400 and error_code(replay.body) == "state-mismatch"
    log = service.log()
    assert "smart authorization completed" in log
    state_and_code = [v for c in callbacks for k, v in parse(c).items() if k in {"state", "code"}]
    assert PATIENT not in log and not [v for v in state_and_code if v in log]
    if service.database_file is not None:  # encrypted at rest: no patient id or state in the files
        data = b"".join(
            p.read_bytes() for p in service.database_file.parent.glob(f"{service.database_file.name}*")
        )
        assert PATIENT.encode() not in data and not [v for v in state_and_code if v.encode() in data]


def test_logout_on_one_worker_ends_the_session_on_the_other(stack: FhirStack, service: Service) -> None:
    first, second = service.workers()
    browser = Browser()
    _, page = launch(stack, service, browser, first, second)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.body)
    assert csrf is not None
    form = {"csrf": csrf.group(1), "action": "set", "at": "2026-03-14T08:00"}
    assert browser.app(service, second, "/smart/dashboard", form).status == 303
    moved = browser.app(service, first, "/smart/dashboard").body  # the change saved on the other worker
    assert "an instant chosen on this page" in moved and "2026-03-14 08:00 UTC" in moved
    ended = browser.app(service, second, "/smart/logout", {"csrf": csrf.group(1)})
    assert ended.status == 200
    after = browser.app(service, first, "/smart/dashboard")
    assert after.status == 401 and error_code(after.body) == "no-session"


def parse(url: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in urlsplit(url).query.split("&") if "=" in pair)
