"""The production deployment (issue 18, items 3 and 6): a real Debian nginx running the shipped
deploy/nginx/cds-service.conf in front of a real gunicorn (2 workers x 4 threads, client JWTs verified).

* Starvation: 10 clients trickling a body at 2 bytes/s and 10 clients trickling their headers hold all 8
  threads of a bare gunicorn (the control below shows /healthz timing out); through nginx they do not
  delay /healthz or a hook call beyond its deadline.
* Edges, on gunicorn itself: a chunked body over the limit is a 413 OperationOutcome (not a body cut at the
  limit and called malformed JSON), a JWT between 8 and 32 KiB is the app's 401 OperationOutcome (not
  gunicorn's HTML 431), and a CORS preflight on the feedback endpoint logs no error.
* nginx answers its own refusals (body over 20 MiB, chunked or not) as OperationOutcomes too.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.auth_client import SigningKey, bearer, client_entry, token
from tests.cds_helpers import car_t_patient, full_prefetch, hook_body
from tests.gunicorn_process import ServerProcess, start_server
from tests.nginx_process import NginxProcess, render, start_nginx
from tests.plugins.fhir_stack import free_port

KEY = SigningKey.ec("nginx-key")
HOOK_PATH = "/cds-services/iec-hs-screening"
FEEDBACK_PATH = "/cds-services/iec-hs-screening/feedback"
DEADLINE_S = 2.5  # the service's default hook deadline
SLOW_CLIENTS = 10
LIMIT = 20 * 1024 * 1024


@dataclass
class Deployment:
    gunicorn: ServerProcess
    nginx: NginxProcess
    public_base: str

    def jwt(self, path: str) -> dict[str, str]:
        return bearer(token(KEY, self.public_base + path))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("deploy")
    nginx_port, upstream_port = free_port(), free_port()
    public_base = f"http://127.0.0.1:{nginx_port}"
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'deploy.sqlite3'}",
        "CDS_WORKERS": "2",
        "CDS_THREADS": "4",
        "CDS_TRUSTED_CLIENTS": json.dumps({"clients": [client_entry(KEY)]}),
        "CDS_PUBLIC_BASE_URL": public_base,
        "CDS_TRUSTED_PROXY_HOPS": "1",
    }
    gunicorn = start_server(workdir, upstream_port, env, label="behind-nginx")
    try:
        nginx = start_nginx(workdir / "nginx", nginx_port, upstream_port)
        try:
            yield Deployment(gunicorn, nginx, public_base)
        finally:
            nginx.stop()
    finally:
        gunicorn.stop()


@dataclass
class Tricklers:
    """Connections that send a request's start and then one more byte every `interval_s` until stopped."""

    port: int
    kind: str  # "body" or "headers"
    count: int = SLOW_CLIENTS
    interval_s: float = 0.5
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    opened: int = 0

    def __enter__(self) -> Tricklers:
        for _ in range(self.count):
            thread = threading.Thread(target=self._trickle, daemon=True)
            thread.start()
            self.threads.append(thread)
        deadline = time.monotonic() + 10
        while self.opened < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the first bytes have reached the server and its threads
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _trickle(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            if self.kind == "body":
                head = f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                sock.sendall((head + "Content-Length: 100000\r\n\r\n{").encode())
            else:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            self.opened += 1
            try:
                while not self.stop.wait(self.interval_s):
                    sock.sendall(b" ")
            except OSError:
                pass  # the server gave up on us (its timeout): that is its right


def timed_get(url: str, timeout: float) -> tuple[int, float]:
    start = time.monotonic()
    response = requests.get(url, timeout=timeout)
    return response.status_code, time.monotonic() - start


def test_the_test_renders_the_shipped_file_with_ports_only() -> None:
    rendered = render(1111, 2222)
    assert "@" not in rendered.replace("@too_large", "").replace("@throttled", "").replace(
        "@timeout", ""
    ).replace("@unavailable", "")
    assert "listen 127.0.0.1:1111;" in rendered and "server 127.0.0.1:2222;" in rendered


def _health_times_out(base_url: str) -> bool:
    try:
        requests.get(f"{base_url}/healthz", timeout=3)
    except requests.ReadTimeout:
        return True
    return False


def test_bare_gunicorn_is_starved_by_slow_bodies(deployment: Deployment) -> None:
    """The control: what nginx is for. With every thread reading a trickled body, /healthz waits.

    Slow clients are added ten at a time until /healthz waits: on a loaded machine one worker process
    may accept most connections while the other is descheduled, so how many it takes varies; a gunicorn
    that is never starved by 80 of them fails the control."""
    with contextlib.ExitStack() as stack:
        starved = False
        for _ in range(8):
            stack.enter_context(Tricklers(deployment.gunicorn.port, "body"))
            if _health_times_out(deployment.gunicorn.base_url):
                starved = True
                break
        assert starved
    requests.get(f"{deployment.gunicorn.base_url}/healthz", timeout=30)  # released when the clients left


def test_slow_clients_do_not_delay_health_or_hooks_behind_nginx(deployment: Deployment) -> None:
    resources = car_t_patient("nginx-1")
    body = hook_body("patient-view", "nginx-1", prefetch=full_prefetch(resources))
    with Tricklers(deployment.nginx.port, "body"), Tricklers(deployment.nginx.port, "headers"):
        for _ in range(3):
            status, elapsed = timed_get(f"{deployment.nginx.base_url}/healthz", timeout=DEADLINE_S)
            assert status == 200 and elapsed < DEADLINE_S
            start = time.monotonic()
            response = requests.post(
                deployment.nginx.base_url + HOOK_PATH,
                json=body,
                headers=deployment.jwt(HOOK_PATH),
                timeout=10,
            )
            elapsed = time.monotonic() - start
            assert response.status_code == 200, response.text[:300]
            assert response.json()["cards"]
            assert elapsed < DEADLINE_S, f"hook answered after {elapsed:.2f} s"


def test_nginx_refuses_bodies_over_the_limit_as_an_operation_outcome(deployment: Deployment) -> None:
    url = deployment.nginx.base_url + HOOK_PATH
    declared = requests.post(url, data=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"})
    chunked = requests.post(
        url, data=iter([b"x" * (1 << 20)] * 21), headers={"Content-Type": "application/json"}
    )
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["issue"][0]["code"] == "too-costly"


def raw_request(port: int, head: bytes, body_chunks: Iterator[bytes] | None = None) -> tuple[int, bytes]:
    """Send a request on a raw socket (a sender thread for the body) and read the status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)

        def send() -> None:
            try:
                for chunk in body_chunks or ():
                    sock.sendall(chunk)
            except OSError:
                pass  # the server answered and closed before the whole body was sent

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < _length(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
        sender.join(timeout=30)
    status = int(received.split(b" ", 2)[1])
    return status, received.split(b"\r\n\r\n", 1)[1]


def _length(received: bytes) -> int:
    for line in received.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def chunked(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = b"x" * min(size, total - sent)
        sent += len(part)
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def test_a_chunked_body_over_the_limit_is_413_at_gunicorn(deployment: Deployment) -> None:
    auth = deployment.jwt(HOOK_PATH)["Authorization"]
    head = (
        f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    status, body = raw_request(deployment.gunicorn.port, head, chunked(LIMIT + (1 << 20)))
    assert status == 413
    outcome = json.loads(body)
    assert (
        outcome["issue"][0]["code"] == "too-costly" and "20971520 bytes" in outcome["issue"][0]["diagnostics"]
    )


@pytest.mark.parametrize("size", [9 * 1024, 16 * 1024, 17 * 1024, 30 * 1024])
def test_an_oversized_jwt_is_a_401_outcome(deployment: Deployment, size: int) -> None:
    """Between gunicorn's old 8 KiB line limit and twice the documented 16 KiB maximum: the app's 401."""
    fake = "e" * (size // 2) + "." + "e" * (size // 2) + ".sig"
    for base in (deployment.gunicorn.base_url, deployment.nginx.base_url):
        response = requests.get(
            f"{base}/cds-services", headers={"Authorization": f"Bearer {fake}"}, timeout=10
        )
        assert response.status_code == 401
        assert response.json()["issue"][0]["code"] == "login"


def test_a_feedback_preflight_logs_no_error(deployment: Deployment) -> None:
    before = len(deployment.gunicorn.json_lines())
    headers = {
        "Origin": "https://ehr.example.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    for _ in range(3):
        response = requests.options(deployment.gunicorn.base_url + FEEDBACK_PATH, headers=headers, timeout=10)
        assert response.status_code == 200
    time.sleep(0.5)  # the log lines are written after the responses
    lines = deployment.gunicorn.json_lines()[before:]
    assert sum(1 for line in lines if line.get("method") == "OPTIONS") == 3
    assert [line for line in lines if line.get("level") == "ERROR"] == []
