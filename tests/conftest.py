"""Shared fixtures. Real servers (FHIR, SMART, PostgreSQL, browser) live in tests/plugins/."""

from __future__ import annotations

pytest_plugins: list[str] = []
