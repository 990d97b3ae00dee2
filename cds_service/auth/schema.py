"""JSON Schema (draft 2020-12) of the trusted-clients document (CDS_TRUSTED_CLIENTS_FILE or the inline
CDS_TRUSTED_CLIENTS).

Kept in Python so it ships with the package without packaging rules. Documented in docs/trusted-clients.md;
config/trusted-clients.example.json is checked against it by the test suite.
"""

from __future__ import annotations

from typing import Any

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256")  # CDS Hooks: ES384/RS384 recommended, never none/HS*
DEFAULT_ALGORITHMS = ("ES384", "RS384")

_URL = {"type": "string", "pattern": "^https?://[^\\s/?#@]+[^\\s?#@]*$", "maxLength": 2048}
_PUBLIC_JWK = {
    "type": "object",
    "required": ["kty", "kid"],
    "properties": {
        "kty": {"enum": ["EC", "RSA"]},
        "kid": {"type": "string", "minLength": 1, "maxLength": 256},
        "use": {"const": "sig"},
        "alg": {"enum": list(ALGORITHMS)},
    },
    # Private key material has no business in a trust store: refuse it rather than silently use it.
    "not": {"anyOf": [{"required": ["d"]}, {"required": ["p"]}, {"required": ["k"]}]},
}

TRUSTED_CLIENTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Trusted CDS clients",
    "type": "object",
    "required": ["clients"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "description": {"type": "string"},
        "clients": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["issuer"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "maxLength": 200},
                    "issuer": {"type": "string", "minLength": 1, "maxLength": 512},
                    "jwks": {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "minItems": 1, "items": _PUBLIC_JWK}},
                    },
                    "jwks_url": _URL,
                    "jku_allowlist": {"type": "array", "items": _URL, "uniqueItems": True},
                    "algorithms": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"enum": list(ALGORITHMS)},
                    },
                    "fhir_servers": {"type": "array", "items": _URL, "uniqueItems": True},
                    "tenants": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                },
            },
        },
    },
}
