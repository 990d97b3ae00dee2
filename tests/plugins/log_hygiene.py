"""pytest plugin: scan every log line the service writes during the whole test session for PHI.

Register with ``pytest_plugins = [..., "tests.plugins.log_hygiene"]`` (tests/conftest.py) or
``-p tests.plugins.log_hygiene``. A handler on the ``cds_service`` logger formats each record as the service
would (JsonFormatter) and looks for the fixtures' patient ids, names, identifiers and birth dates, and for
the test suite's well-known access tokens. Any hit fails the session, listing the offending lines.

``fixture_phi()`` and ``find_phi()`` are shared with tests/test_log_hygiene.py (which also checks lab values
and the JWTs of one realistic run).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import pytest

from cds_service.datafiles import PROJECT_ROOT
from cds_service.web.observability import JsonFormatter

# Bearer tokens used by the suite against FHIR servers: never to be logged by the service.
KNOWN_TOKENS = ("cds-test-token", "stolen-token-value", "tok-xyz", "fhir-access-token-1", "soak-fhir-token")
MAX_REPORTED = 20


def _bundles() -> Iterator[dict[str, Any]]:
    for pattern in ("fixtures/scenarios/*.json", "fixtures/population/*.json"):
        for path in sorted(PROJECT_ROOT.glob(pattern)):
            if path.name.endswith(".expected.json") or path.name == "index.json":
                continue
            document = json.loads(path.read_text(encoding="utf-8"))
            yield document.get("bundle", document)


def patients() -> Iterator[dict[str, Any]]:
    for bundle in _bundles():
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == "Patient":
                yield resource


@cache
def fixture_phi() -> frozenset[str]:
    """Patient ids, name parts, identifier values and birth dates of every fixture patient."""
    found: set[str] = set()
    for patient in patients():
        found.add(patient["id"])
        for name in patient.get("name", []):
            found.update([name.get("family", ""), *name.get("given", [])])
        found.update(identifier.get("value", "") for identifier in patient.get("identifier", []))
        found.add(patient.get("birthDate", ""))
    return frozenset(value for value in found if len(value) >= 4)


def find_phi(lines: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Lines holding any of `secrets` (as whole words), each prefixed with what was found."""
    pattern = _pattern(frozenset(secrets))
    hits = []
    for line in lines:
        match = pattern.search(line)
        if match:
            hits.append(f"{match.group(0)!r} in: {line[:300]}")
    return hits


@cache
def _pattern(secrets: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9_-])(?:{alternatives})(?![A-Za-z0-9_-])")


class PhiScanner(logging.Handler):
    """Checks each record as it is emitted (no unbounded buffering over a long session)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.secrets = fixture_phi() | frozenset(KNOWN_TOKENS)
        self.hits: list[str] = []
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is the formatter's problem, not ours
            return
        self.lines += 1
        if len(self.hits) < MAX_REPORTED:
            self.hits += find_phi([line], self.secrets)


_scanner = PhiScanner()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("cds_service").addHandler(_scanner)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"log hygiene: {_scanner.lines} service log lines scanned")
    for hit in _scanner.hits:
        terminalreporter.write_line(f"log hygiene: PHI or token in the service log: {hit}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _scanner.hits and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
