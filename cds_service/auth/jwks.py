"""Fetching and caching client JWKS documents (from a configured `jwks_url` or an allowlisted `jku`).

* Only URLs the trust configuration approved reach this module, and it re-checks the transport anyway:
  https, or (development only) http on loopback. No redirects are followed, bodies are size-capped and
  read under a deadline, and proxy/.netrc settings are ignored (the session has trust_env off).
* A document is reused for `ttl_s`. An unknown `kid` triggers a refetch (key rotation), but one URL is
  fetched at most once per `min_refresh_s`: a flood of tokens with made-up kids cannot become a flood of
  outbound requests. If a refetch fails, the last good keys stay in use until they are replaced.
* One lock per URL: concurrent requests for a cold URL make one fetch, not one each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import requests

from cds_service.auth.keys import VerificationKey, parse_key_set
from cds_service.web.security import transport_allowed

log = logging.getLogger("cds_service.auth")
MAX_JWKS_BYTES = 256 * 1024
_CHUNK = 16 * 1024


class JwksUnavailable(Exception):
    """A JWKS could not be fetched or parsed; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Entry:
    keys: dict[str, VerificationKey] = field(default_factory=dict)
    fetched_at: float | None = None  # last successful fetch
    attempted_at: float | None = None  # last fetch attempt, successful or not
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """Keys by (URL, kid), fetched through `session` on demand."""

    def __init__(
        self,
        session: requests.Session,
        *,
        ttl_s: float,
        min_refresh_s: float,
        timeout_s: float,
        dev_mode: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self.ttl_s, self.min_refresh_s, self.timeout_s = ttl_s, min_refresh_s, timeout_s
        self.dev_mode = dev_mode
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._guard = threading.Lock()
        self.fetches = 0  # for tests and metrics: outbound JWKS requests made

    def key(self, url: str, kid: str) -> VerificationKey | None:
        """The key `kid` of the JWKS at `url`, fetching when stale or when the kid is unknown (rate-limited).

        Raises JwksUnavailable when no keys at all could be obtained from `url`."""
        entry = self._entry(url)
        with entry.lock:
            if self._stale(entry) or (kid not in entry.keys and self._may_refetch(entry)):
                self._refresh(url, entry)
            if entry.fetched_at is None:
                raise JwksUnavailable("JWKS unavailable")
            return entry.keys.get(kid)

    def _entry(self, url: str) -> _Entry:
        with self._guard:
            return self._entries.setdefault(url, _Entry())

    def _stale(self, entry: _Entry) -> bool:
        now = self._clock()
        if entry.fetched_at is None or now - entry.fetched_at >= self.ttl_s:
            return self._may_refetch(entry)
        return False

    def _may_refetch(self, entry: _Entry) -> bool:
        return entry.attempted_at is None or self._clock() - entry.attempted_at >= self.min_refresh_s

    def _refresh(self, url: str, entry: _Entry) -> None:
        entry.attempted_at = self._clock()
        try:
            keys = self._fetch(url)
        except JwksUnavailable as exc:
            log.warning("JWKS fetch failed", extra={"event": "jwks-fetch", "reason": exc.reason})
            return
        entry.keys, entry.fetched_at = keys, self._clock()

    def _fetch(self, url: str) -> dict[str, VerificationKey]:
        if not transport_allowed(url, self.dev_mode):
            raise JwksUnavailable("JWKS URL refused (https only outside development)")
        self.fetches += 1
        try:
            with self._session.get(
                url,
                headers={"Accept": "application/json, application/jwk-set+json"},
                timeout=self.timeout_s,
                stream=True,
                allow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    raise JwksUnavailable(f"JWKS HTTP {response.status_code}")
                body = _read_capped(response, time.monotonic() + self.timeout_s)
        except requests.RequestException:
            raise JwksUnavailable("JWKS request failed") from None
        return _parse(body)


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.raw.read1(_CHUNK, decode_content=True):
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise JwksUnavailable("JWKS too large")
        if time.monotonic() > deadline:
            raise JwksUnavailable("JWKS fetch timed out")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> dict[str, VerificationKey]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise JwksUnavailable("JWKS is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksUnavailable("JWKS has no keys array")
    usable, problems = parse_key_set(keys)
    if problems:
        log.info("JWKS keys skipped", extra={"event": "jwks-skipped", "problems": problems[:10]})
    if not usable:
        raise JwksUnavailable("JWKS has no usable keys")
    return usable
