"""A real rest-hook endpoint on 127.0.0.1 that records the Subscription notifications it receives.

>>> with RestHookReceiver() as hook:  # doctest: +SKIP
...     post_subscription(endpoint=hook.url)
...     handshake = hook.wait_for(lambda n: n.type == "handshake")
...     hook.status = 500  # make the next deliveries fail
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Notification:
    """One POST received: a backport notification Bundle and its request headers."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int
    """The HTTP status the receiver answered with."""
    raw: bytes = b""
    """The body exactly as received (for signature checks)."""

    @property
    def status(self) -> dict[str, Any]:
        """The first entry's resource: the backport-subscription-status-r4 Parameters."""
        resource: dict[str, Any] = self.body["entry"][0]["resource"]
        return resource

    def parameter(self, name: str) -> dict[str, Any] | None:
        for param in self.status.get("parameter", []):
            if param.get("name") == name:
                found: dict[str, Any] = param
                return found
        return None

    @property
    def type(self) -> str:
        param = self.parameter("type") or {}
        return str(param.get("valueCode", ""))

    @property
    def subscription(self) -> str:
        param = self.parameter("subscription") or {}
        return str(param.get("valueReference", {}).get("reference", ""))

    @property
    def events_since_start(self) -> int:
        param = self.parameter("events-since-subscription-start") or {}
        return int(param.get("valueString", "0"))

    def events(self) -> list[dict[str, Any]]:
        """Each notification-event as ``{"event-number": "3", "timestamp": ..., "focus": "url"}``."""
        out: list[dict[str, Any]] = []
        for param in self.status.get("parameter", []):
            if param.get("name") != "notification-event":
                continue
            event: dict[str, Any] = {}
            for part in param.get("part", []):
                value = {k: v for k, v in part.items() if k.startswith("value")}
                (only,) = value.values()
                event[part["name"]] = only["reference"] if isinstance(only, dict) else only
            out.append(event)
        return out


class RestHookReceiver:
    """Records every POST; answers ``status`` (200 unless changed) after ``delay_s``."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.notifications: list[Notification] = []
        self._changed = threading.Condition()
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                answer = receiver.status
                time.sleep(receiver.delay_s)
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"unparsable": raw.decode("utf-8", "replace")}
                note = Notification(self.path, dict(self.headers.items()), body, answer, raw)
                with receiver._changed:
                    receiver.notifications.append(note)
                    receiver._changed.notify_all()
                try:
                    self.send_response(answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server gave up waiting (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="rest-hook", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/notify"

    def wait_for(
        self, predicate: Callable[[Notification], bool], *, timeout: float = 30.0, after: int = 0
    ) -> Notification:
        """The first notification (from index ``after`` on) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for note in self.notifications[after:]:
                    if predicate(note):
                        return note
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(n.type, n.events_since_start, n.answered) for n in self.notifications]
                    raise AssertionError(f"no matching notification within {timeout} s; received {seen}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RestHookReceiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
