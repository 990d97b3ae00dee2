"""A real HTTP server for the app on a background thread (tests, screenshots, local trials).

``with serve(app, port) as base_url:`` serves the WSGI app with werkzeug's threaded server on 127.0.0.1 only
and shuts it down on exit. Not for production: use ``cds-service serve`` (gunicorn).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server


class QuietRequestHandler(WSGIRequestHandler):
    """No per-request log line: werkzeug's would print the callback URL, code and state included."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@contextmanager
def serve(app: Flask, port: int, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on http://{host}:{port} until the block ends; yields the base URL."""
    server = make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name=f"smart-devserver-{port}", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
