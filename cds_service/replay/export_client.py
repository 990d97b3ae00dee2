"""``--export-from``: a FHIR Bulk Data ``$export`` with SMART Backend Services credentials.

Token: the token endpoint from ``{base}/.well-known/smart-configuration``, a ``client_credentials`` grant with
a signed ``private_key_jwt`` client assertion (RS384 for an RSA key, ES384 for an EC key). Export: the
kick-off (``Prefer: respond-async``), status polling honouring ``Retry-After``, then each output file streamed
to ``DIR/Type.N.ndjson``. Errors say which step failed and what the server answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASYNC = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
TIMEOUT_S = 60
MAX_WAIT_S = 3600.0  # give up polling after this long
MAX_RETRY_AFTER_S = 60.0


class ExportError(Exception):
    """The export could not be run or downloaded (the message says at which step)."""


def _b64(value: int, size: int | None = None) -> str:
    raw = value.to_bytes(size or (value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def thumbprint(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 JWK thumbprint of the public key (the default key id)."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        members: dict[str, str] = {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}
    else:
        point = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        members = {
            "crv": "P-384" if key.curve.key_size == 384 else "P-256",
            "kty": "EC",
            "x": _b64(point.x, size),
            "y": _b64(point.y, size),
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class BackendCredentials:
    client_id: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    scope: str
    kid: str | None = None

    @classmethod
    def from_pem(cls, client_id: str, pem: bytes, scope: str, kid: str | None = None) -> BackendCredentials:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ExportError("the key must be an RSA or EC private key (PEM)")
        return cls(client_id, key, scope, kid)

    def assertion(self, token_url: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now + 240,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        alg = "RS384" if isinstance(self.key, rsa.RSAPrivateKey) else "ES384"
        headers = {"kid": self.kid or thumbprint(self.key), "typ": "JWT"}
        return jwt.encode(claims, self.key, algorithm=alg, headers=headers)


def _fail(step: str, response: requests.Response) -> ExportError:
    return ExportError(f"{step}: HTTP {response.status_code} from {response.url}: {response.text[:300]}")


def fhir_base(url: str) -> str:
    """The FHIR base of a kick-off URL (``.../$export``, ``.../Patient/$export``, ``.../Group/x/$export``)."""
    if "$export" not in url:
        return url.rstrip("/")
    head = url.split("$export", 1)[0].rstrip("/")
    for tail in ("/Patient",):
        if head.endswith(tail):
            return head[: -len(tail)]
    parts = head.rsplit("/", 2)
    return parts[0] if len(parts) == 3 and parts[1] == "Group" else head


def kickoff_url(url: str) -> str:
    """The URL itself when it names $export, else a Patient-level export of the base."""
    return url if "$export" in url else f"{url.rstrip('/')}/Patient/$export"


def access_token(session: requests.Session, base: str, credentials: BackendCredentials) -> str:
    found = session.get(f"{base}/.well-known/smart-configuration", timeout=TIMEOUT_S)
    if found.status_code != 200:
        raise _fail("SMART configuration", found)
    token_url = str(found.json().get("token_endpoint") or "")
    if not token_url:
        raise ExportError(f"{found.url} names no token_endpoint")
    answer = session.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": credentials.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": credentials.assertion(token_url),
        },
        timeout=TIMEOUT_S,
    )
    if answer.status_code != 200:
        raise _fail("token request", answer)
    return str(answer.json()["access_token"])


def _manifest(session: requests.Session, status_url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + MAX_WAIT_S
    while True:
        status = session.get(status_url, headers=headers, timeout=TIMEOUT_S)
        if status.status_code == 200:
            manifest: dict[str, Any] = status.json()
            return manifest
        if status.status_code != 202:
            raise _fail("export status", status)
        if time.monotonic() > deadline:
            raise ExportError(f"export not complete after {MAX_WAIT_S:.0f} s ({status_url})")
        try:
            wait = float(status.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.2), MAX_RETRY_AFTER_S))


def download_export(
    url: str,
    destination: Path,
    *,
    client_id: str,
    key_path: Path,
    scope: str = "system/*.read",
    kid: str | None = None,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """Run the export at `url` into `destination` (NDJSON files + manifest.json); the manifest."""
    http = session or requests.Session()
    credentials = BackendCredentials.from_pem(client_id, key_path.read_bytes(), scope, kid)
    token = access_token(http, fhir_base(url), credentials)
    headers = {"Authorization": f"Bearer {token}"}
    started = http.get(kickoff_url(url), headers={**ASYNC, **headers}, timeout=TIMEOUT_S)
    if started.status_code != 202 or "Content-Location" not in started.headers:
        raise _fail("export kick-off", started)
    manifest = _manifest(http, started.headers["Content-Location"], headers)
    destination.mkdir(parents=True, exist_ok=True)
    fetch = headers if manifest.get("requiresAccessToken", True) else {}
    for index, item in enumerate(manifest.get("output", [])):
        _download(http, str(item["url"]), destination / f"{item['type']}.{index:04d}.ndjson", fetch)
    for index, item in enumerate(manifest.get("error", [])):
        _download(http, str(item["url"]), destination / f"errors.{index:04d}.json", fetch)
    (destination / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _download(http: requests.Session, url: str, path: Path, headers: dict[str, str]) -> None:
    with http.get(
        url, headers={**headers, "Accept": "application/fhir+ndjson"}, stream=True, timeout=TIMEOUT_S
    ) as got:
        if got.status_code != 200:
            raise _fail(f"download {path.name}", got)
        with path.open("wb") as handle:
            for block in got.iter_content(chunk_size=1 << 20):
                handle.write(block)
