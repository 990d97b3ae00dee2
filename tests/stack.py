"""``python -m tests.stack`` (``make stack``): the test FHIR + SMART stack on fixed ports.

Loads every fixtures/scenarios/*.json and fixtures/population/*.json Bundle, prints the URLs and
waits until Ctrl-C. Ports and other knobs come from the environment (FHIR_PORT, default 8090;
AUTH_PORT, default 8091; APP_PORT, default 5000 for the registered SMART callback; plus every
knob of tests/fhir_stack/stack.mjs, e.g. FHIR_MAX_COUNT or SMART_REDIRECT_URIS).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from tests.plugins.fhir_stack import (
    FhirStack,
    FhirStackError,
    callback_uris,
    discover_seed_paths,
    start_stack,
)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def describe(stack: FhirStack) -> str:
    example_launch = stack.ehr_launch_url("PATIENT_ID", f"http://127.0.0.1:{stack.app_port}/smart/launch")
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
        f"  seed files:           {len(stack.seed_paths)} ({stack.info['seeded_entries']} entries)",
        f"  reset data:           curl -X POST {stack.fhir_origin}/_control/reset",
        f"  example search:       curl -H 'Authorization: Bearer {stack.token}' "
        f"'{stack.fhir_base}/Patient?_count=5'",
        f"  started in {stack.info['startup_ms']} ms; stack log: {stack.stderr_path}",
    ]
    return "\n".join(lines)


def main() -> int:
    fhir_port = _int_env("FHIR_PORT", 8090)
    auth_port = _int_env("AUTH_PORT", 8091)
    app_port = _int_env("APP_PORT", 5000)
    redirect = os.environ.get("SMART_REDIRECT_URIS")
    redirect_uris = (
        [u.strip() for u in redirect.split(",") if u.strip()]
        if redirect is not None
        else callback_uris(app_port)
    )
    try:
        stack = start_stack(
            seed_paths=discover_seed_paths(),
            redirect_uris=redirect_uris,
            app_port=app_port,
            fhir_port=fhir_port,
            auth_port=auth_port,
            inherit_knobs=True,
        )
    except FhirStackError as exc:
        print(exc, file=sys.stderr)
        return 1

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(describe(stack), flush=True)
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
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
