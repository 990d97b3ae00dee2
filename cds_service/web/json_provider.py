"""Flask's JSON responses through orjson: the hook's card response is serialized in C.

Only plain JSON takes this path (str keys, finite numbers, no dates or decimals): orjson writes it as the
standard library would, except that non-ASCII text is sent as UTF-8 rather than as \\u escapes (the same
JSON). Anything else, and every response in debug mode (indented), is written by Flask's own provider.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


class OrjsonProvider(DefaultJSONProvider):
    sort_keys = False  # discovery and cards keep their own order

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        if not self._app.debug:
            try:
                body = orjson.dumps(obj, default=_refuse, option=orjson.OPT_PASSTHROUGH_DATETIME)
            except TypeError:
                pass  # not plain JSON (a date, a non-str key, ...): Flask's provider writes it
            else:
                if b"null" not in body or not _has_non_finite(obj):
                    return Response(body + b"\n", mimetype=self.mimetype)
        return super().response(obj)  # type: ignore[return-value]  # Flask annotates it loosely


def _has_non_finite(value: Any) -> bool:
    """Whether a float is NaN or infinite (orjson writes null where the standard library writes NaN)."""
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    return False
