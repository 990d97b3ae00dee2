"""A small FHIR R4 read/search client for prefetch fallback, around an injected `requests.Session`.

* `Authorization: Bearer <fhirAuthorization.access_token>` (when given) and `Accept: application/fhir+json`.
* Every call has a budget: the time left before the hook's deadline, so a slow first call may use what
  the others leave (optionally capped by a per-call timeout, CDS_FHIR_TIMEOUT_S). The body is read in
  chunks so a server that drips bytes cannot hold the call past its budget; bodies are size-capped.
* Search results follow `Bundle.link[relation=next]` up to `max_pages`, and only on the fhirServer's own
  origin: the bearer token is never sent anywhere else. Redirects are not followed for the same reason. A
  `next` link already visited (a loop) stops paging; so does reaching `max_entries` merged entries. Either
  way the result is marked incomplete and the caller reports the gap.
* The access token is never sent after `token_expires_at` (from fhirAuthorization.expires_in): the call
  fails with "access token expired" instead.
* Errors carry a short reason ("timeout", "HTTP 500", ...) that is safe to log: never the URL (it holds the
  patient id) and never the token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests

MAX_BODY_BYTES = 50 * 1024 * 1024
MAX_ENTRIES = 10_000  # per query, all pages together; far above a real 60-day lab history
_CHUNK = 64 * 1024


class FhirFetchError(Exception):
    """A FHIR call failed; `reason` is short and free of PHI and credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """A resource or a (merged) searchset Bundle; `complete` is False when pages were left unread."""

    value: dict[str, Any] | None
    complete: bool = True


def same_origin(url: str, base: str) -> bool:
    """Scheme, host and port equal (case-insensitive)."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())


class FhirClient:
    """Read and search one FHIR server with one (transient) access token."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        access_token: str | None,
        *,
        timeout_s: float | None,
        max_pages: int,
        max_bytes: int = MAX_BODY_BYTES,
        max_entries: int = MAX_ENTRIES,
        token_expires_at: float | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._token = access_token
        self.timeout_s = timeout_s
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._token_expires_at = token_expires_at

    def __repr__(self) -> str:  # never show the token
        return f"FhirClient(base_url={self.base_url!r}, token={'set' if self._token else 'none'})"

    def get(self, relative: str, deadline: float) -> FetchOutcome:
        """Run a read (`Patient/1`) or a search (`Observation?...`); a read that is 404 gives value None."""
        is_read = "?" not in relative
        document = self._get_json(f"{self.base_url}/{relative.lstrip('/')}", deadline, allow_404=is_read)
        if document is None:
            return FetchOutcome(None)
        if is_read:
            if document["resourceType"] != relative.lstrip("/").split("/", 1)[0]:
                raise FhirFetchError("read returned another resource type")
            return FetchOutcome(document)
        return self.continue_bundle(document, deadline)

    def continue_bundle(self, bundle: dict[str, Any], deadline: float) -> FetchOutcome:
        """Follow `next` links from `bundle` (bounded, same origin only) and merge all entries."""
        if bundle.get("resourceType") != "Bundle":
            raise FhirFetchError("search did not return a Bundle")
        entries = list(_entries(bundle))
        visited: set[str] = set()
        current, complete = bundle, True
        while (link := _next_link(current)) is not None:
            if not self._may_follow(link, visited, len(entries)):
                complete = False
                break
            visited.add(link)
            try:
                current = self._get_json(link, deadline, allow_404=False) or {}
            except FhirFetchError:
                complete = False  # keep the pages already read; the caller reports the gap
                break
            if current.get("resourceType") != "Bundle":
                complete = False
                break
            entries.extend(_entries(current))
        if len(entries) > self.max_entries:
            entries, complete = entries[: self.max_entries], False
        merged = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
        return FetchOutcome(merged, complete)

    def _may_follow(self, link: str, visited: set[str], entries: int) -> bool:
        """Another page: within max_pages and max_entries, same origin, not seen before (no loops)."""
        return (
            len(visited) + 1 < self.max_pages
            and entries < self.max_entries
            and same_origin(link, self.base_url)
            and link not in visited
        )

    def _get_json(self, url: str, deadline: float, *, allow_404: bool) -> dict[str, Any] | None:
        budget = deadline - time.monotonic()
        if self.timeout_s is not None:
            budget = min(self.timeout_s, budget)
        if budget <= 0:
            raise FhirFetchError("deadline exceeded")
        if self._token and self._token_expires_at is not None and time.monotonic() >= self._token_expires_at:
            raise FhirFetchError("access token expired")
        call_deadline = time.monotonic() + budget
        try:
            with self._session.get(
                url, headers=self._headers(), timeout=budget, stream=True, allow_redirects=False
            ) as response:
                if response.status_code == 404 and allow_404:
                    return None
                if response.status_code != 200:
                    raise FhirFetchError(f"HTTP {response.status_code}")
                if _declared_length(response) > self.max_bytes:
                    raise FhirFetchError("response too large")
                body = self._read(response, call_deadline)
        except requests.Timeout:
            raise FhirFetchError("timeout") from None
        except requests.ConnectionError:
            raise FhirFetchError("connection failed") from None
        except requests.RequestException:
            raise FhirFetchError("request failed") from None
        return _parse_resource(body)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/fhir+json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _read(self, response: requests.Response, call_deadline: float) -> bytes:
        # read1 returns whatever one socket read yields, so a server that drips bytes is caught at the
        # budget (plus at most one read timeout) instead of after the whole body.
        chunks: list[bytes] = []
        size = 0
        while chunk := response.raw.read1(_CHUNK, decode_content=True):
            size += len(chunk)
            if size > self.max_bytes:
                raise FhirFetchError("response too large")
            if time.monotonic() > call_deadline:
                raise FhirFetchError("timeout")
            chunks.append(chunk)
        return b"".join(chunks)


def _declared_length(response: requests.Response) -> int:
    """Content-Length when given and numeric (a server announcing a gigantic body is refused unread)."""
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else 0


def _parse_resource(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FhirFetchError("invalid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise FhirFetchError("not a FHIR resource")
    if document["resourceType"] == "OperationOutcome":
        raise FhirFetchError("OperationOutcome returned")
    return document


def _entries(bundle: dict[str, Any]) -> list[Any]:
    entries = bundle.get("entry")
    return entries if isinstance(entries, list) else []


def _next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            self_link = next(
                (lk.get("url") for lk in links if isinstance(lk, dict) and lk.get("relation") == "self"), None
            )
            return urljoin(self_link, link["url"]) if isinstance(self_link, str) else str(link["url"])
    return None
