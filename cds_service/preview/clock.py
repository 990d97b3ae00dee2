"""Development mode only: let a hook call choose its evaluation instant with a request header.

The preview page replays fixture scenarios at their own instant (``at`` of the expected file) by sending
``X-CDS-Evaluation-Instant: <RFC 3339>`` to the real hook endpoint. The header works through the app's
``CLOCK`` injection point (cds_service.web.app), which this module sets only when

* the server is in development mode (client authentication is off anyway, and no real data may be used),
* and nobody injected a CLOCK already (tests pin their own).

Outside development mode the header is ignored: a production client can never move the evaluation instant.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, has_request_context, request

from cds_service.errors import InvalidRequest
from cds_service.web.state import get_state

HEADER = "X-CDS-Evaluation-Instant"
_EARLIEST, _LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def header_clock() -> datetime | None:
    """The instant named by the request's header, or None (the engine then uses now)."""
    if not has_request_context():
        return None
    raw = request.headers.get(HEADER)
    return None if raw is None else parse_instant(raw.strip())


def parse_instant(raw: str) -> datetime:
    """An RFC 3339 instant with an offset, between 1900 and 2200; InvalidRequest (400) otherwise."""
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{HEADER}: expected an RFC 3339 date-time, got {raw[:40]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{HEADER}: the date-time needs an offset (Z or +hh:mm)")
    if not _EARLIEST <= parsed < _LATEST:
        raise InvalidRequest(f"{HEADER}: must be between 1900 and 2200")
    return parsed.astimezone(UTC)


def install(app: Flask) -> None:
    """Use the header clock in development mode when no CLOCK was injected."""
    if get_state(app).settings.dev_mode and app.config.get("CLOCK") is None:
        app.config["CLOCK"] = header_clock
