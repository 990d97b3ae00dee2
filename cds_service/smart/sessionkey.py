"""The key that encrypts stored SMART sessions: ``CDS_SMART_SESSION_KEY``.

The value is a Fernet key: 32 random bytes, URL-safe base64 (44 characters). Make one with
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.
Several comma-separated keys rotate the key: the first encrypts, every one decrypts.

Every process and host sharing the session tables must have the same key. Without one, a key is generated
when the app is created. ``cds-service serve`` creates the app once in the gunicorn master before forking,
so its workers share that key; sessions then end with a restart and cannot be shared across hosts. That is
meant for development: outside development mode it is logged as an error at start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from cds_service.errors import ConfigurationError
from cds_service.smart.codec import SessionCipher

KEY_VARIABLE = "CDS_SMART_SESSION_KEY"
CONFIG_KEY = "SMART_SESSION_KEY"
log = logging.getLogger("cds_service.smart")
GENERATED_IN_DEVELOPMENT = (
    f"{KEY_VARIABLE} is not set: SMART sessions are encrypted with a key generated at start (development "
    "mode). Sessions end when the server restarts."
)
GENERATED_IN_PRODUCTION = (
    f"{KEY_VARIABLE} is not set outside development mode: SMART sessions are encrypted with a key "
    "generated at start. They end when the server restarts, and other hosts using the same database cannot "
    f"read them. Set {KEY_VARIABLE} (a Fernet key) on every host."
)


def session_cipher(
    config: Mapping[str, Any], dev_mode: bool, environ: Mapping[str, str] | None = None
) -> SessionCipher:
    """The cipher from ``app.config["SMART_SESSION_KEY"]`` or the environment; generated if unset."""
    env = os.environ if environ is None else environ
    raw = config.get(CONFIG_KEY, env.get(KEY_VARIABLE))
    keys = [key.strip() for key in str(raw or "").split(",") if key.strip()]
    if not keys:
        message = GENERATED_IN_DEVELOPMENT if dev_mode else GENERATED_IN_PRODUCTION
        log.log(logging.INFO if dev_mode else logging.ERROR, message, extra={"event": "smart-session-key"})
        return SessionCipher.generate()
    try:
        return SessionCipher(keys)
    except ValueError:  # binascii.Error is a ValueError; the key itself is never echoed
        raise ConfigurationError(
            KEY_VARIABLE,
            "expected Fernet keys (32 bytes, URL-safe base64), comma-separated, the newest first",
        ) from None
