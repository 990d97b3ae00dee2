"""The project's own pytest "CDS client" for authentication tests (cds-hooks.md §4.4).

* ``SigningKey``: ES384/ES256 (EC) and RS384/RS256 (RSA 2048) test keys with their public JWK.
* ``token(...)``: a signed CDS Hooks client JWT (iss, aud, exp, iat, jti; optional tenant, jku, extras).
* ``JwksServer``: a real HTTP or HTTPS (self-signed CA, trusted through ``ca_file``) server on 127.0.0.1
  that serves a mutable JWKS and records every request.
* ``ConnectionRecorder``: a bare TCP listener on 127.0.0.1 that records every accepted connection: the proof
  that a refused URL was never contacted (not even a TCP handshake).
* ``auth_config(...)``: create_app overrides for a production-mode app trusting the given clients.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from requests import Session

BASE = "https://cds.example.org"
DISCOVERY = f"{BASE}/cds-services"
SCREENING_PATH = "/cds-services/iec-hs-screening"
ISSUER = "https://ehr.example.org"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def ec(cls, kid: str = "ec-1", alg: str = "ES384") -> SigningKey:
        curve: ec.EllipticCurve = ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()
        return cls(kid, alg, ec.generate_private_key(curve))

    @classmethod
    def rsa(cls, kid: str = "rsa-1", alg: str = "RS384", bits: int = 2048) -> SigningKey:
        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    def jwk(self, **extra: Any) -> dict[str, Any]:
        algorithm = jwt.algorithms.ECAlgorithm if self.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", **extra}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def token(
    key: SigningKey,
    aud: str = DISCOVERY,
    *,
    iss: str = ISSUER,
    lifetime: float = 300,
    iat_offset: float = 0,
    jti: str | None = None,
    headers: dict[str, Any] | None = None,
    drop: Sequence[str] = (),
    **claims: Any,
) -> str:
    """A client JWT as the CDS Hooks Sandbox builds it (iat may be a float, like Math.round()/1000 + skew)."""
    now = time.time() + iat_offset
    payload: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": int(now + lifetime),
        "jti": str(uuid.uuid4()) if jti is None else jti,
        **claims,
    }
    for name in drop:
        payload.pop(name, None)
    header = {"kid": key.kid, "typ": "JWT", **(headers or {})}
    header = {name: value for name, value in header.items() if value is not None}  # None: leave out
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=header)


def unsigned_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (alg none, forged HMAC, ...)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    return f"{signing_input}.{part(signature)}"


def hs256_with_public_key(key: SigningKey, payload: dict[str, Any]) -> str:
    """The key-confusion attack: HS256 with the client's PEM public key as the HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    body = unsigned_token(header, payload).rsplit(".", 1)[0]
    signature = hmac.new(key.public_pem(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def claims(aud: str = DISCOVERY, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **extra}


def bearer(jwt_text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt_text}"}


def client_entry(*keys: SigningKey, issuer: str = ISSUER, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"issuer": issuer, **extra}
    if keys:
        entry["jwks"] = {"keys": [k.jwk() for k in keys]}
    return entry


def auth_config(tmp_path: Path, *clients: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """create_app overrides: production mode, public base URL, these trusted clients, a SQLite file."""
    return {
        "CDS_DEV_MODE": False,
        "CDS_PUBLIC_BASE_URL": BASE,
        "CDS_TRUSTED_CLIENTS": json.dumps({"clients": list(clients)}),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.sqlite3'}",
        **extra,
    }


# ------------------------------------------------------------------------------------------ servers


@dataclass
class LoopbackCertificate:
    """A self-signed certificate for 127.0.0.1/localhost (its own CA)."""

    cert_file: Path
    key_file: Path

    @property
    def ca_file(self) -> Path:
        return self.cert_file


def self_signed(directory: Path) -> LoopbackCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "jwks-cert.pem", directory / "jwks-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return LoopbackCertificate(cert_file, key_file)


@dataclass
class JwksServer:
    """Serves ``{"keys": keys}`` at /jwks.json (any path), over http or https; records request paths."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    certificate: LoopbackCertificate | None = None
    requests: list[str] = field(default_factory=list)
    status: int = 200

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                outer.requests.append(self.path)
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certificate.cert_file, self.certificate.key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.certificate else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def session(self) -> Session:
        """A JWKS session that trusts this server's self-signed certificate (and nothing from the env)."""
        session = requests.Session()
        session.trust_env = False
        if self.certificate is not None:
            session.verify = str(self.certificate.ca_file)
        return session

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that counts accepted connections (and closes them at once)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.05)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._socket.getsockname()[1]
        return port

    def url(self, scheme: str = "http", path: str = "/") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            connection.close()

    def __enter__(self) -> ConnectionRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)  # let a connection that is racing in be counted before stopping
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@contextmanager
def recording() -> Iterator[ConnectionRecorder]:
    with ConnectionRecorder() as recorder:
        yield recorder


def with_tls(server: Any, certificate: LoopbackCertificate) -> Any:
    """Turn a not-yet-started tests.loopback_http.LoopbackServer into an https server (base_url too)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    server._server.socket = context.wrap_socket(server._server.socket, server_side=True)
    server.https_base_url = server.base_url.replace("http://", "https://", 1)
    return server


def trusting_session(certificate: LoopbackCertificate) -> requests.Session:
    """An HTTP session (trust_env off) that trusts the test CA: the app's HTTP_SESSION for https loopback."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(certificate.ca_file)
    return session
