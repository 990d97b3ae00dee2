"""``python -m tests.stack`` (``make stack``): the test FHIR + SMART stack on fixed ports.

Loads every fixtures/scenarios/*.json and fixtures/population/*.json Bundle, registers an example
SMART Backend Services client (its private key is written to a temporary directory, printed at
start), prints the URLs and waits until Ctrl-C. Ports and other knobs come from the environment
(FHIR_PORT, default 8090; AUTH_PORT, default 8091; APP_PORT, default 8080 -- `make run`'s port -- for the
registered SMART callback; plus every knob of tests/fhir_stack/stack.mjs, e.g. FHIR_MAX_COUNT, STACK_ADMIN or
SMART_BACKEND_CLIENTS, which replaces the example client). `make stack` passes PORT, FHIR_PORT and AUTH_PORT
of the Makefile, the same variables `make run` uses, so the two always agree on the ports.

For each fixture scenario it prints a ready EHR launch URL of the app's dashboard on APP_PORT, evaluated at
the scenario's instant (the card's appContext), e.g. for classic-iec-hs.

``python -m tests.stack token DIR [--scope SCOPE]`` prints a backend access token for the example
client whose key the running stack wrote to DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import requests

from cds_service.preview.scenarios import Scenario, list_scenarios
from tests.plugins.fhir_stack import (
    FhirStack,
    FhirStackError,
    callback_uris,
    discover_seed_paths,
    start_stack,
)
from tests.plugins.smart_backend import (
    BackendClient,
    generate_backend_client,
    load_private_key,
    token_request_data,
)

EXAMPLE_CLIENT_ID = "stack-backend"
APP_PORT = 8080  # `make run`'s default PORT: the app whose SMART callback the stack registers


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def write_example_client(client: BackendClient, stack: FhirStack, directory: Path) -> Path:
    """Writes the example client's private key and a client.json that ``token`` reads."""
    key_path = directory / "private-key.pem"
    key_path.write_text(client.private_key_pem(), encoding="utf-8")
    key_path.chmod(0o600)
    details = {
        "client_id": client.client_id,
        "alg": client.alg,
        "kid": client.kid,
        "scope": client.scope,
        "token_url": stack.token_url,
        "fhir_base": stack.fhir_base,
        "private_key": str(key_path),
    }
    (directory / "client.json").write_text(json.dumps(details, indent=2), encoding="utf-8")
    # A CDS_WATCH_SERVERS_FILE for the watch list (docs/watch-list.md): this stack, this client.
    watch = {
        "servers": [
            {
                "fhir_server": stack.fhir_base,
                "name": "Test stack",
                "client_id": client.client_id,
                "private_key_file": str(key_path),
            }
        ]
    }
    (directory / "watch-servers.json").write_text(json.dumps(watch, indent=2), encoding="utf-8")
    return key_path


def dashboard_launch_url(stack: FhirStack, scenario: Scenario) -> str:
    """The EHR launch of the app's dashboard for `scenario`'s patient at its instant (as its card does)."""
    context = json.dumps(
        {"at": scenario.at.isoformat(), "patient": scenario.name, "view": "iec-hs"},
        separators=(",", ":"),
        sort_keys=True,
    )
    launch_uri = f"http://127.0.0.1:{stack.app_port}/smart/launch"
    return stack.ehr_launch_url(scenario.name, launch_uri, app_context=context)


def describe(stack: FhirStack, example_key: Path | None = None) -> str:
    example_launch = stack.ehr_launch_url("PATIENT_ID", f"http://127.0.0.1:{stack.app_port}/smart/launch")
    info = stack.info
    lines = [
        "FHIR + SMART test stack is running (Ctrl-C to stop)",
        f"  FHIR base:            {stack.fhir_base}",
        f"  CapabilityStatement:  {stack.fhir_base}/metadata",
        f"  smart-configuration:  {stack.smart_configuration_url}",
        f"  authorize / token:    {stack.authorize_url}  {stack.token_url}",
        f"  EHR launch example:   {example_launch}",
        f"  static Bearer token:  {stack.token or '(none)'}"
        + ("" if stack.info.get("require_auth") else "  (auth disabled)"),
        f"  SMART client_id:      {stack.client_id}",
        f"  redirect URIs:        {', '.join(stack.redirect_uris)}",
        f"  page size:            default {stack.info['default_count']}, max {stack.info['max_count']}",
        f"  backend services:     POST {stack.token_url} (client_credentials, private_key_jwt RS384/ES384); "
        f"clients: {', '.join(info['backend_clients']) or '(none)'}; token TTL {info['backend_token_ttl']} s",
    ]
    if example_key is not None:
        lines += [
            f"  example client:       {EXAMPLE_CLIENT_ID}, private key {example_key}",
            f"  backend token:        .venv/bin/python -m tests.stack token {example_key.parent} "
            "--scope 'system/*.rs'",
            f"  watch list:           CDS_WATCH_SERVERS_FILE={example_key.parent / 'watch-servers.json'} "
            "make run",
        ]
    lines += [
        f"  bulk export:          {stack.bulk_export_url()}  {stack.bulk_export_url('patient')}  "
        f"{stack.fhir_base}/Group/GROUP_ID/$export  (Prefer: respond-async; status delay "
        f"{info['bulk_export_delay_ms']} ms, {info['bulk_export_max_per_file']} per file)",
        "  subscriptions:        "
        + (", ".join(info["subscription_topics"]) + " (rest-hook)" if info["subscriptions"] else "off"),
        "  admin (faults):       "
        + (
            f"{stack.admin_url}/faults, {stack.admin_url}/revoke-tokens"
            if info["admin"]
            else "off (STACK_ADMIN=true)"
        ),
        f"  seed files:           {len(stack.seed_paths)} ({stack.info['seeded_entries']} entries)",
        f"  reset data:           curl -X POST {stack.fhir_origin}/_control/reset",
        f"  example search:       curl -H 'Authorization: Bearer {stack.token}' "
        f"'{stack.fhir_base}/Patient?_count=5'",
        f"  started in {stack.info['startup_ms']} ms; stack log: {stack.stderr_path}",
        "",
        f"The app: `make run` (or `make run PORT={stack.app_port} AUTH_PORT={stack.auth_port}`) serves "
        f"http://127.0.0.1:{stack.app_port}/; its preview page opens a card's dashboard link through this "
        "stack's EHR launcher (reload the page after starting the stack).",
        f"Dashboard launch URLs (app on port {stack.app_port}, at each scenario's instant):",
    ]
    lines += [f"  {s.name:26} {dashboard_launch_url(stack, s)}" for s in list_scenarios()]
    return "\n".join(lines)


def token_command(argv: list[str]) -> int:
    """``token DIR [--scope S]``: a backend access token for the example client in DIR."""
    parser = argparse.ArgumentParser(prog="python -m tests.stack token")
    parser.add_argument("directory", type=Path, help="the directory `make stack` printed")
    parser.add_argument("--scope", default="system/*.rs")
    args = parser.parse_args(argv)
    details = json.loads((args.directory / "client.json").read_text(encoding="utf-8"))
    key = load_private_key(Path(details["private_key"]).read_bytes())
    client = BackendClient(details["client_id"], key, details["scope"])
    resp = requests.post(
        details["token_url"],
        data=token_request_data(client.assertion(details["token_url"]), args.scope),
        timeout=30,
    )
    if resp.status_code != 200:
        print(f"HTTP {resp.status_code}: {resp.text}", file=sys.stderr)
        return 1
    print(resp.json()["access_token"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_command(argv[1:])
    fhir_port = _int_env("FHIR_PORT", 8090)
    auth_port = _int_env("AUTH_PORT", 8091)
    app_port = _int_env("APP_PORT", APP_PORT)
    redirect = os.environ.get("SMART_REDIRECT_URIS")
    redirect_uris = (
        [u.strip() for u in redirect.split(",") if u.strip()]
        if redirect is not None
        else callback_uris(app_port)
    )
    # SMART_BACKEND_CLIENTS from the environment replaces the example client.
    example = None if os.environ.get("SMART_BACKEND_CLIENTS") else generate_backend_client(EXAMPLE_CLIENT_ID)
    try:
        stack = start_stack(
            seed_paths=discover_seed_paths(),
            redirect_uris=redirect_uris,
            app_port=app_port,
            fhir_port=fhir_port,
            auth_port=auth_port,
            inherit_knobs=True,
            backend_clients=[example] if example else [],
        )
    except FhirStackError as exc:
        print(exc, file=sys.stderr)
        return 1
    key_dir = Path(tempfile.mkdtemp(prefix="fhir-stack-backend-"))
    example_key = write_example_client(example, stack, key_dir) if example else None

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(describe(stack, example_key), flush=True)
    try:
        while not stopping:
            if stack.process.poll() is not None:
                print(
                    f"stack exited with code {stack.process.returncode}\n{stack.stderr_tail()}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
    finally:
        stack.stop()
        shutil.rmtree(key_dir, ignore_errors=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
