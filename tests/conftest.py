"""Shared fixtures. Real servers (FHIR + SMART stack, PostgreSQL, Chromium) live in tests/plugins/."""

from __future__ import annotations

pytest_plugins: list[str] = [
    "tests.plugins.fhir_stack",
    "tests.plugins.postgres",
    "tests.plugins.browser",
    "tests.plugins.log_hygiene",  # scans every log line of the session for fixture identifiers and tokens
]
