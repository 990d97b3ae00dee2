"""The fault matrix of the FHIR fallback, end to end through the app: every fault of a required key is a
412 naming the key, every fault of an optional key is a 200 whose card states the gap, and every answer
comes within the hook deadline. Never a 500, never a hang. Faults come from the real test FHIR server
(wrong token, unknown patient, tiny pages) and from real misbehaving HTTP servers on loopback (refused
connections, DNS failure, slow and dripping servers, 401/403/404/5xx, malformed JSON, looping and foreign
`next` links, gigantic and endless bodies, too many entries)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import create_app
from cds_service.hooks.fhir_client import MAX_ENTRIES
from tests import fhir_builders as fb
from tests.cds_helpers import (
    assert_conformant,
    car_t_patient,
    dev_config,
    hook_body,
    searchset,
    stated_gaps,
    unique,
)
from tests.loopback_http import LoopbackServer, Reply, Seen, closed_port_url
from tests.plugins.fhir_stack import FhirStack

DEADLINE_S, FHIR_TIMEOUT_S = 1.5, 0.6
MARGIN_S = 2.0  # the app's own work (parse, evaluate, render) on a loaded, shared CI machine
REAL_DEADLINE_S, REAL_TIMEOUT_S = 6.0, 3.0  # the real (Node) server: generous, its answers are the point
PID = "fault-patient"
RESOURCES = car_t_patient(PID)
Fault = Callable[[Seen, str], Reply]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    config = dev_config(
        tmp_path_factory.mktemp("faults"), CDS_HOOK_DEADLINE_S=DEADLINE_S, CDS_FHIR_TIMEOUT_S=FHIR_TIMEOUT_S
    )
    return create_app(config)


def answer(
    app: Flask, fhir_server: str, token: str = "tok", patient: str = PID, deadline: float = DEADLINE_S
) -> tuple[int, Any]:
    """POST a hook without prefetch; check the timing and the no-500 rule; return status and body."""
    start = time.monotonic()
    response = app.test_client().post(
        "/cds-services/iec-hs-screening",
        json=hook_body("patient-view", patient, fhir_server=fhir_server, token=token),
    )
    elapsed = time.monotonic() - start
    assert elapsed < deadline + MARGIN_S, f"answered after {elapsed:.2f} s"
    assert response.status_code in (200, 412), response.get_data(as_text=True)[:500]
    body = response.get_json()
    if response.status_code == 200:
        assert_conformant(body)
    else:
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "incomplete"
    return response.status_code, body


def healthy(seen: Seen) -> Reply:
    if seen.path.startswith("/fhir/Patient/"):
        return Reply(body=RESOURCES[0])
    kind = seen.path.rsplit("/", 1)[-1]
    return Reply(body=searchset(r for r in RESOURCES if r["resourceType"] == kind))


def on(resource_type: str, fault: Fault) -> Callable[[Seen], Reply]:
    """A healthy server whose searches of `resource_type` misbehave."""

    def handler(seen: Seen) -> Reply:
        if seen.path.endswith(f"/{resource_type}"):
            return fault(seen, resource_type)
        return healthy(seen)

    return handler


def status(code: int) -> Fault:
    return lambda seen, kind: Reply(status=code, body={"resourceType": "OperationOutcome", "issue": []})


def page_with_next(url: Callable[[Seen], str]) -> Fault:
    def fault(seen: Seen, kind: str) -> Reply:
        page = searchset(r for r in RESOURCES if r["resourceType"] == kind)
        page["link"] = [{"relation": "next", "url": url(seen)}]
        return Reply(body=page)

    return fault


def too_many_entries(seen: Seen, kind: str) -> Reply:
    entry = {"resourceType": kind, "id": "x", "status": "final", "subject": {"reference": f"Patient/{PID}"}}
    return Reply(body=searchset([{**entry, "id": f"e{i}"} for i in range(MAX_ENTRIES + 1)]))


FAULTS: dict[str, Fault] = {
    "401": status(401),
    "403": status(403),
    "404": status(404),
    "500": status(500),
    "503": status(503),
    "malformed-json": lambda seen, kind: Reply(body=b'{"resourceType": "Bundle", "entry": [}'),
    "html": lambda seen, kind: Reply(body=b"<html>login</html>", content_type="text/html"),
    "not-a-bundle": lambda seen, kind: Reply(body={"resourceType": "Patient", "id": "x"}),
    "slow-past-deadline": lambda seen, kind: Reply(body=searchset([]), delay_s=DEADLINE_S + 1),
    "dripping": lambda seen, kind: Reply(
        body=searchset([{"resourceType": kind, "id": "x" * 500}]), drip_s=0.01
    ),
    "self-loop-next": page_with_next(lambda seen: f"http://{seen.headers['Host']}{seen.path}?page=1"),
    "foreign-next": page_with_next(lambda seen: "http://127.0.0.2:9/fhir/Observation?page=2"),
    "too-many-entries": too_many_entries,
}
# Faults that still yield data (the first page): the key is incomplete, not unavailable.
PARTIAL = {"self-loop-next", "foreign-next", "too-many-entries"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_on_required_data_is_412_or_a_stated_gap(app: Flask, fault: str) -> None:
    with LoopbackServer(on("Observation", FAULTS[fault])) as server:
        code, body = answer(app, f"{server.base_url}/fhir")
    if fault in PARTIAL:
        assert code == 200 and "observations" in stated_gaps(body)
    else:
        assert code == 412
        assert body["issue"][0]["expression"] == ["prefetch.observations"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_on_optional_data_is_a_stated_gap(app: Flask, fault: str) -> None:
    with LoopbackServer(on("Condition", FAULTS[fault])) as server:
        code, body = answer(app, f"{server.base_url}/fhir")
    assert code == 200
    assert "conditions" in stated_gaps(body)


def test_a_looping_next_link_is_followed_once(app: Flask) -> None:
    seen_pages: list[str] = []

    def looping(seen: Seen, kind: str) -> Reply:
        seen_pages.append(seen.path + str(seen.query))
        page = searchset([])
        page["link"] = [{"relation": "next", "url": f"http://{seen.headers['Host']}/fhir/{kind}?page=1"}]
        return Reply(body=page)

    with LoopbackServer(on("Observation", looping)) as server:
        code, body = answer(app, f"{server.base_url}/fhir")
    assert code == 200 and "observations" in stated_gaps(body)
    assert len(seen_pages) == 2  # the first page and page=1 once; the loop back to page=1 is refused


def test_connection_refused_is_412(app: Flask) -> None:
    code, body = answer(app, closed_port_url())
    assert code == 412 and "connection failed" in body["issue"][0]["diagnostics"]


def test_dns_failure_is_412(app: Flask) -> None:
    code, body = answer(app, "https://cds-fault-test.invalid/fhir")
    assert code == 412
    assert any(r in body["issue"][0]["diagnostics"] for r in ("connection failed", "deadline exceeded"))


def test_a_server_that_hangs_everything_is_412_within_the_deadline(app: Flask) -> None:
    with LoopbackServer(lambda seen: Reply(body=searchset([]), delay_s=DEADLINE_S + 2)) as server:
        code, body = answer(app, f"{server.base_url}/fhir")
    assert code == 412
    assert body["issue"][0]["expression"] == ["prefetch.patient", "prefetch.observations"]


class GiganticBody(BaseHTTPRequestHandler):
    """200 for every request, with either a declared 10 GB Content-Length (and a few bytes) or no length
    and an endless stream of JSON-looking bytes (bounded at ~1.3 GB, far beyond any cap)."""

    declared = False

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        if self.declared:
            self.send_header("Content-Length", str(10 << 30))
        self.end_headers()
        chunk = json.dumps({"resourceType": "Observation", "id": "x" * 1000}).encode() * 64
        try:
            self.wfile.write(b'{"resourceType": "Bundle", "entry": [')
            for _ in range(1 if self.declared else 20_000):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DeclaredGigantic(GiganticBody):
    declared = True


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("handler", [GiganticBody, DeclaredGigantic], ids=["endless", "declared-10GB"])
def test_gigantic_bodies_are_cut_off(app: Flask, handler: type[BaseHTTPRequestHandler]) -> None:
    with serving(handler) as url:
        code, body = answer(app, url)
    assert code == 412
    diagnostics = body["issue"][0]["diagnostics"]
    assert "response too large" in diagnostics or "timeout" in diagnostics or "deadline" in diagnostics
    if handler is DeclaredGigantic:
        assert "patient: response too large" in diagnostics  # refused on the header, unread


# ------------------------------------------------------------------------------- the real FHIR server


def real_app(tmp_path: Path, **settings: Any) -> Flask:
    config = dev_config(tmp_path, CDS_HOOK_DEADLINE_S=REAL_DEADLINE_S, CDS_FHIR_TIMEOUT_S=REAL_TIMEOUT_S)
    return create_app({**config, **settings})


def test_real_server_wrong_token_is_412(tmp_path: Path, fhir_stack: FhirStack) -> None:
    code, body = answer(real_app(tmp_path), fhir_stack.fhir_base, "not-the-token", deadline=REAL_DEADLINE_S)
    assert code == 412 and "HTTP 401" in body["issue"][0]["diagnostics"]


def test_real_server_unknown_patient(tmp_path: Path, fhir_stack: FhirStack) -> None:
    nobody = unique("nobody")
    code, _ = answer(real_app(tmp_path), fhir_stack.fhir_base, fhir_stack.token, nobody, REAL_DEADLINE_S)
    assert code in (200, 412)  # a 404 read is "no data": answered, never a 500


def test_real_server_tiny_pages_are_truncated_and_stated(tmp_path: Path, fhir_stack: FhirStack) -> None:
    with fhir_stack.start_extra({"FHIR_MAX_COUNT": "1"}, seeds=[]) as tiny:
        pid = unique("tiny")
        tiny.load_bundle(fb.bundle(*car_t_patient(pid)))
        app = real_app(tmp_path, CDS_FHIR_MAX_PAGES=3)
        code, body = answer(app, tiny.fhir_base, tiny.token, pid, REAL_DEADLINE_S)
    assert code == 200 and "observations" in stated_gaps(body)
