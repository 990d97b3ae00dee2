"""Fuzzing the whole app with hypothesis (tests/fuzz_strategies.py): structured CDS Hooks requests with
mutated FHIR data, feedback, and raw garbage, some with a FHIR fallback to a misbehaving loopback server.
Property: never a 5xx; a 200 is schema-valid (cds-response, discovery or feedback counts); anything else is
an OperationOutcome. A fast variant runs in the normal suite; `make test-slow` sends >= 10,000 requests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import create_app
from cds_service.hooks.validation import errors as schema_errors
from tests.auth_client import SigningKey, auth_config, client_entry, token, unsigned_token
from tests.cds_helpers import assert_conformant, dev_config, searchset
from tests.fuzz_strategies import PID, Call, json_values, requests
from tests.loopback_http import LoopbackServer, Reply, Seen, closed_port_url

COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
FAST_EXAMPLES, SLOW_EXAMPLES = 300, 10_000
_replies = itertools.cycle(["ok", "500", "junk", "not-bundle", "loop", "ok"])


def misbehaving(seen: Seen) -> Reply:
    """Answers in turn: fine, 500, malformed JSON, a Patient for a search, a Bundle whose next loops."""
    kind = next(_replies)
    if seen.path.startswith("/fhir/Patient/"):
        return Reply(body={"resourceType": "Patient", "id": PID, "birthDate": "1970-01-01"})
    if kind == "500":
        return Reply(status=500, body=b"down")
    if kind == "junk":
        return Reply(body=b'{"resourceType": "Bundle", "entry": [{')
    if kind == "not-bundle":
        return Reply(body={"resourceType": "Patient", "id": "x"})
    page = searchset([])
    if kind == "loop":
        page["link"] = [{"relation": "next", "url": f"http://{seen.headers['Host']}{seen.path}?p=1"}]
    return Reply(body=page)


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[str]:
    with LoopbackServer(misbehaving) as server:
        yield f"{server.base_url}/fhir"


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, fhir_server: str) -> tuple[Flask, tuple[str, ...]]:
    servers = (fhir_server, closed_port_url())
    config = dev_config(
        tmp_path_factory.mktemp("fuzz"),
        CDS_HOOK_DEADLINE_S=1.0,
        CDS_FHIR_TIMEOUT_S=0.5,
        CDS_MAX_REQUEST_BYTES=200_000,
        FHIR_SERVER_POLICY=lambda url: url in servers,  # never a network call outside loopback
    )
    return create_app(config), servers


def check(app: Flask, call: Call) -> int:
    """Send one request and assert the property; returns the status."""
    headers = {"Content-Type": call.content_type} if call.content_type else {}
    response = app.test_client().open(call.path, method=call.method, data=call.body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:300])
    body: Any = response.get_json(silent=True)
    if response.status_code != 200:
        assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", body
        assert isinstance(body["issue"][0]["code"], str)
    elif call.path.endswith("/feedback"):
        assert set(body) == {"received", "stored"}
    elif call.path == "/cds-services":
        assert schema_errors("discovery", body) == []
    else:
        assert_conformant(body)
    return response.status_code


def run(app: Flask, examples: int, servers: tuple[str, ...]) -> int:
    sent = 0

    @settings(COMMON, max_examples=examples)
    @given(requests(servers))
    def fuzz(call: Call) -> None:
        nonlocal sent
        sent += 1
        check(app, call)

    fuzz()
    return sent


def test_fuzz_fast(fuzz_app: tuple[Flask, tuple[str, ...]]) -> None:
    app, servers = fuzz_app
    assert run(app, FAST_EXAMPLES, servers) >= FAST_EXAMPLES


@pytest.mark.slow
def test_fuzz_ten_thousand_requests(fuzz_app: tuple[Flask, tuple[str, ...]]) -> None:
    app, servers = fuzz_app
    start = time.monotonic()
    sent = run(app, SLOW_EXAMPLES, servers)
    print(f"\nfuzz: {sent} requests in {time.monotonic() - start:.0f} s")
    assert sent >= SLOW_EXAMPLES


# ------------------------------------------------------------------------------ Authorization headers

KEY = SigningKey.ec("fuzz-key")


@st.composite
def forged_tokens(draw: st.DrawFn) -> str:
    """JWT-shaped strings: random headers and claims, signed, re-signed or spliced."""
    headers = draw(st.dictionaries(st.sampled_from(["alg", "kid", "jku", "typ", "crit", "x5u"]), json_values))
    claims = draw(
        st.dictionaries(st.sampled_from(["iss", "aud", "exp", "iat", "jti", "tenant", "nbf"]), json_values)
    )
    valid = token(KEY)
    head, payload, signature = valid.split(".")
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return unsigned_token(headers, claims, draw(st.binary(max_size=64)))
    if choice == 1:
        return f"{head}.{unsigned_token({}, claims).split('.')[1]}.{signature}"  # claims swapped
    if choice == 2:
        return f"{unsigned_token(headers, {}).split('.')[0]}.{payload}.{signature}"  # header swapped
    # Raw text, minus CR/LF: no HTTP client can send those in a header (the test client refuses them).
    return draw(st.text(st.characters(exclude_characters="\r\n"), max_size=100))


def test_fuzz_authorization_headers(tmp_path: Path) -> None:
    app = create_app(auth_config(tmp_path, client_entry(KEY, jku_allowlist=["https://127.0.0.1:9/jwks"])))

    @settings(COMMON, max_examples=FAST_EXAMPLES)
    @given(forged_tokens(), st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "", "Basic "]))
    def fuzz(jwt_text: str, scheme: str) -> None:
        response = app.test_client().get("/cds-services", headers={"Authorization": scheme + jwt_text})
        assert response.status_code == 401, response.get_data(as_text=True)

    fuzz()
