"""SMART Backend Services clients for the test stack: key pairs, registrations, client assertions.

A backend client authenticates at the stack's token endpoint with a JWT signed by its private key
(RFC 7523, ``private_key_jwt``); the stack knows the public key from ``SMART_BACKEND_CLIENTS``
(written by :func:`write_backend_clients`, which ``start_stack(backend_clients=...)`` does for you).

>>> client = generate_backend_client("my-backend", alg="ES384", scope="system/Observation.rs")
>>> assertion = client.assertion("http://127.0.0.1:8091/token")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SIGNING_ALGS = ("RS384", "ES384")
DEFAULT_BACKEND_SCOPE = "system/*.cruds"
"""What a generated client may be granted (v2 ``cruds`` also covers v1 ``read``/``write``/``*``)."""
MAX_ASSERTION_LIFETIME_S = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_private_key(key: PrivateKey | str | bytes) -> PrivateKey:
    """A private key object from itself or from PEM text (PKCS#8 or traditional, unencrypted)."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    data = key.encode("ascii") if isinstance(key, str) else key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("backend client keys must be RSA or EC (P-384) keys")
    return loaded


def signing_alg(key: PrivateKey) -> str:
    """RS384 for RSA keys, ES384 for P-384 keys (the two algorithms SMART servers must support)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ValueError(f"EC keys must use P-384 for ES384, got {key.curve.name}")


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    """The public key as a JWK with ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = dict(RSAAlgorithm.to_jwk(public, as_dict=True))
        required: tuple[str, ...] = ("e", "kty", "n")
    else:
        jwk = dict(ECAlgorithm.to_jwk(public, as_dict=True))
        required = ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    jwk["kid"] = _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())
    jwk["alg"] = signing_alg(key)
    jwk["use"] = "sig"
    return jwk


def client_assertion(
    client_id: str,
    private_key: PrivateKey | str | bytes,
    token_url: str,
    *,
    kid: str | None = None,
    alg: str | None = None,
    lifetime_s: int = MAX_ASSERTION_LIFETIME_S,
    jti: str | None = None,
    claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A SMART Backend Services client assertion: iss = sub = client_id, aud = token URL,
    exp = now + ``lifetime_s``, a fresh jti; header ``kid`` (thumbprint of the key unless given)
    and ``typ: JWT``. ``claims`` / ``headers`` override or add fields (e.g. for negative tests)."""
    key = load_private_key(private_key)
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + lifetime_s,
        "iat": now,
        "jti": jti or uuid.uuid4().hex,
    }
    payload.update(claims or {})
    header: dict[str, Any] = {"kid": kid or public_jwk(key)["kid"], "typ": "JWT"}
    header.update(headers or {})
    return jwt.encode(payload, key, algorithm=alg or signing_alg(key), headers=header)


def token_request_data(assertion: str, scope: str) -> dict[str, str]:
    """The form body of a client_credentials token request."""
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }


@dataclass(frozen=True)
class BackendClient:
    """A registered (or registrable) backend client and its private key."""

    client_id: str
    private_key: PrivateKey
    scope: str = DEFAULT_BACKEND_SCOPE
    """Space-separated system scopes the stack may grant this client."""
    jwks_uri: str | None = None
    """Register the key by URL instead of inline (the stack fetches it from there)."""

    @property
    def alg(self) -> str:
        return signing_alg(self.private_key)

    @property
    def kid(self) -> str:
        return str(self.public_jwk()["kid"])

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.private_key)

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (what a ``jwks_uri`` would serve)."""
        return {"keys": [self.public_jwk()]}

    def private_key_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def registration(self) -> dict[str, Any]:
        """This client's entry in ``SMART_BACKEND_CLIENTS``."""
        entry: dict[str, Any] = {"client_id": self.client_id, "scope": self.scope}
        if self.jwks_uri:
            entry["jwks_uri"] = self.jwks_uri
        else:
            entry["jwks"] = self.jwks()
        return entry

    def assertion(self, token_url: str, **kwargs: Any) -> str:
        """A client assertion for ``token_url`` (keyword arguments as for :func:`client_assertion`)."""
        return client_assertion(self.client_id, self.private_key, token_url, **kwargs)


def generate_backend_client(
    client_id: str | None = None,
    *,
    alg: str = "RS384",
    scope: str = DEFAULT_BACKEND_SCOPE,
    jwks_uri: str | None = None,
) -> BackendClient:
    """A new key pair (RSA 2048 for RS384, P-384 for ES384) and a client id (random unless given)."""
    key: PrivateKey
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        raise ValueError(f"alg must be one of {SIGNING_ALGS}, got {alg!r}")
    return BackendClient(
        client_id=client_id or f"backend-{uuid.uuid4().hex[:8]}",
        private_key=key,
        scope=scope,
        jwks_uri=jwks_uri,
    )


def write_backend_clients(clients: Sequence[BackendClient | Mapping[str, Any]], path: Path) -> Path:
    """Writes the ``SMART_BACKEND_CLIENTS`` JSON file (public keys only) and returns its path."""
    entries = [c.registration() if isinstance(c, BackendClient) else dict(c) for c in clients]
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return path
