"""Per-client rate limits on the anonymous cost centres, with the ``limits`` library.

Three endpoints need no credentials yet cost the service work: a SMART launch (a session, a pending
authorization and a discovery request to the EHR), the preview's request builder (CPU in proportion
to the pasted Bundle) and the preview's evidence view (an evaluation of the posted hook request). Each
client address may call each group ``CDS_RATE_LIMIT`` times (default 60/minute, a fixed window); beyond
that the answer is 429 with Retry-After, before any other work.

Counters live in ``CDS_RATE_LIMIT_STORAGE_URI``: ``memory://`` (default) keeps them per worker process,
so a client gets up to workers x the limit; ``redis://`` or ``memcached://`` (with that storage's client
package installed) shares them across workers and instances. The shipped nginx configuration (deploy/)
limits the same routes in front of the service, with one zone shared by all nginx workers.

The client address is ``request.remote_addr``; behind a proxy set ``CDS_TRUSTED_PROXY_HOPS`` so it is the
address the proxy saw (werkzeug's ProxyFix, installed by :func:`init_app`).
"""

from __future__ import annotations

import os
import threading
import time

from flask import Flask, current_app, request
from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from cds_service.config import Settings

EXTENSION_KEY = "cds_service.rate_limits"
# endpoint -> group: endpoints of one group share a client's allowance
LIMITED_ENDPOINTS = {
    "smart.launch": "smart-launch",
    "smart.standalone": "smart-launch",
    "preview.hook_request": "preview-builder",
    "preview.evidence": "preview-evidence",
}


class RateLimits:
    """One app's limiter. The storage is made in the process that uses it (not inherited through
    gunicorn's fork: a memory storage's expiry thread does not survive a fork)."""

    def __init__(self, rate: str, storage_uri: str) -> None:
        self.item: RateLimitItem = parse(rate)
        self.storage_uri = storage_uri
        self._lock = threading.Lock()
        self._pid = -1
        self._limiter: FixedWindowRateLimiter | None = None

    def limiter(self) -> FixedWindowRateLimiter:
        with self._lock:
            if self._limiter is None or self._pid != os.getpid():
                storage = storage_from_string(self.storage_uri)
                assert isinstance(storage, Storage)  # config refuses async storages
                self._limiter, self._pid = FixedWindowRateLimiter(storage), os.getpid()
            return self._limiter

    def hit(self, group: str, client: str) -> float | None:
        """Count one call; None when allowed, else the seconds until the window resets."""
        limiter = self.limiter()
        if limiter.hit(self.item, group, client):
            return None
        reset_at, _remaining = limiter.get_window_stats(self.item, group, client)
        return max(1.0, reset_at - time.time())


def check_rate_limit() -> None:
    """before_request: 429 for a client past its allowance on a limited endpoint."""
    group = LIMITED_ENDPOINTS.get(request.endpoint or "")
    if group is None:
        return
    limits: RateLimits = current_app.extensions[EXTENSION_KEY]
    retry_after = limits.hit(group, request.remote_addr or "unknown")
    if retry_after is not None:
        raise TooManyRequests(
            f"More than {limits.item} from this client; try again later.",
            retry_after=int(retry_after + 0.999),
        )


def init_app(app: Flask, settings: Settings) -> None:
    """Install the limits (after the request-id hook, before every blueprint's hooks and view) and, behind
    proxies, ProxyFix."""
    app.extensions[EXTENSION_KEY] = RateLimits(settings.rate_limit, settings.rate_limit_storage_uri)
    app.before_request(check_rate_limit)
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]
