"""The FHIR servers the watcher reads, each with its own SMART Backend Services client.

Loaded once at start from CDS_WATCH_SERVERS_FILE (JSON, or YAML by suffix) and validated like the trusted
clients (cds_service.auth.clients): the same transport rule (https; in development also http on loopback),
the same normalization of FHIR base URLs and an exact match at run time, never a prefix. The private key
file of every client is read and checked at start, so a missing or unusable key stops the service there.

.. code-block:: yaml

    servers:
      - fhir_server: https://ehr.hospital.example.org/fhir/r4
        name: Hospital EHR
        client_id: cds-watch
        private_key_file: /etc/cds-service/watch-key.pem   # RSA >= 2048 (RS384) or EC P-384 (ES384)
        scopes: system/Patient.rs system/Observation.rs ...    # optional; default below
        subscriptions: true                                 # optional; rest-hook where supported
        subscription_topic: http://...                      # optional; else the one topic the server offers

The token endpoint is discovered from ``{fhir_server}/.well-known/smart-configuration`` (cds_service.watch.
backend) unless ``token_endpoint`` is given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.errors import ConfigurationError
from cds_service.hooks.validation import describe
from cds_service.web.security import normalize_base_url, transport_allowed

VARIABLE = "CDS_WATCH_SERVERS_FILE"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
# What the watcher reads, as a hook with no prefetch does (cds_service.hooks.services): the patient by id,
# everything else by search.
READ_ACCESS: dict[str, str] = {
    "Patient": "r",
    "Observation": "s",
    "Condition": "s",
    "Procedure": "s",
    "MedicationAdministration": "s",
    "MedicationRequest": "s",
}
SUBSCRIPTION_ACCESS = "cud"
_SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]+)\.(c?r?u?d?s?|read|write|\*)")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["servers"],
    "additionalProperties": False,
    "properties": {
        "servers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["fhir_server", "client_id", "private_key_file"],
                "additionalProperties": False,
                "properties": {
                    "fhir_server": {"type": "string", "minLength": 1},
                    "name": {"type": "string", "minLength": 1},
                    "client_id": {"type": "string", "minLength": 1, "pattern": r"^\S+$"},
                    "private_key_file": {"type": "string", "minLength": 1},
                    "algorithm": {"enum": ["RS384", "ES384"]},
                    "kid": {"type": "string", "minLength": 1},
                    "scopes": {"type": "string", "minLength": 1},
                    "token_endpoint": {"type": "string", "minLength": 1},
                    "subscriptions": {"type": "boolean"},
                    "subscription_topic": {"type": "string", "minLength": 1},
                },
            },
        }
    },
}


@dataclass(frozen=True, slots=True)
class WatchServer:
    """One FHIR server and the backend client the watcher uses there. `base` is the normalized URL."""

    base: str
    name: str
    client_id: str
    private_key: PrivateKey = field(repr=False)
    algorithm: str
    kid: str
    scopes: str
    token_endpoint: str | None
    subscriptions: bool
    subscription_topic: str | None = None

    def may(self, resource_type: str, letters: str) -> bool:
        """Do the configured scopes ask for `letters` (of cruds) on `resource_type`?"""
        return set(letters) <= system_permissions(self.scopes.split(), resource_type)


class ServerRegistry:
    """The configured servers by normalized base URL (an exact lookup, like the trusted clients' lists)."""

    def __init__(self, servers: Iterable[WatchServer]) -> None:
        self._by_base = {server.base: server for server in servers}

    def find(self, url: str | None) -> WatchServer | None:
        normalized = normalize_base_url(url) if url else None
        return self._by_base.get(normalized) if normalized else None

    def __iter__(self) -> Any:
        return iter(self._by_base.values())

    def __len__(self) -> int:
        return len(self._by_base)


def system_permissions(scopes: Iterable[str], resource_type: str) -> set[str]:
    """Letters of c/r/u/d/s that system scopes (v2 ``.rs`` or v1 ``.read``) grant on `resource_type`."""
    letters: set[str] = set()
    for scope in scopes:
        match = _SCOPE.fullmatch(scope)
        if match is None or match.group(1) not in {"*", resource_type}:
            continue
        letters |= set(_V1.get(match.group(2), match.group(2)))
    return letters


def default_scopes(write_back: str) -> str:
    """SMART v2 system scopes for what the watcher does: read, subscribe and (when on) write back."""
    scopes = [f"system/{rtype}.{'rs' if access == 's' else access}" for rtype, access in READ_ACCESS.items()]
    scopes.append("system/Subscription.cruds")
    if write_back != "off":
        scopes.append(f"system/{write_back}.cs")
    return " ".join(scopes)


def load_servers(path: Path | None, *, dev_mode: bool, write_back: str) -> ServerRegistry:
    """The servers of `path` (none: an empty registry); raises ConfigurationError naming the problem."""
    if path is None:
        return ServerRegistry([])
    try:
        text = path.read_text(encoding="utf-8")
        document = yaml.safe_load(text) if path.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(VARIABLE, f"cannot read {path}: {exc}") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigurationError(VARIABLE, f"not valid JSON/YAML: {str(exc).splitlines()[0][:200]}") from None
    return build_registry(document, dev_mode=dev_mode, write_back=write_back, relative_to=path.parent)


def build_registry(
    document: Any, *, dev_mode: bool, write_back: str, relative_to: Path | None = None
) -> ServerRegistry:
    """Validate a decoded servers document and load every client's key."""
    error = best_match(Draft202012Validator(SCHEMA).iter_errors(document))
    if error is not None:
        raise ConfigurationError(VARIABLE, describe(error)[0])
    servers = [
        _server(f"servers[{i}]", raw, dev_mode, write_back, relative_to)
        for i, raw in enumerate(document["servers"])
    ]
    bases = [server.base for server in servers]
    duplicate = next((base for base in bases if bases.count(base) > 1), None)
    if duplicate is not None:
        raise ConfigurationError(VARIABLE, f"FHIR server {duplicate!r} is configured twice")
    return ServerRegistry(servers)


def _server(
    where: str, raw: Mapping[str, Any], dev_mode: bool, write_back: str, relative_to: Path | None
) -> WatchServer:
    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(VARIABLE, f"{where} ({raw['fhir_server']}): {problem}")

    for field_name in ("fhir_server", "token_endpoint"):
        url = raw.get(field_name)
        if url is not None and not transport_allowed(url, dev_mode):
            scheme = "https or http on loopback" if dev_mode else "https (outside development mode)"
            raise fail(f"{field_name}: must be {scheme}, without credentials, query or fragment")
    base = normalize_base_url(raw["fhir_server"])
    assert base is not None  # transport_allowed accepted it
    key_path = Path(raw["private_key_file"])
    if not key_path.is_absolute() and relative_to is not None:
        key_path = relative_to / key_path
    key = _private_key(key_path, fail)
    algorithm = raw.get("algorithm") or ("RS384" if isinstance(key, rsa.RSAPrivateKey) else "ES384")
    if (algorithm == "RS384") != isinstance(key, rsa.RSAPrivateKey):
        raise fail(f"algorithm {algorithm} does not fit the key type")
    scopes = " ".join(str(raw.get("scopes") or default_scopes(write_back)).split())
    bad = [scope for scope in scopes.split() if _SCOPE.fullmatch(scope) is None]
    if bad:
        raise fail(f"scopes: {bad[0]!r} is not a system scope (system/<Type|*>.<cruds|read|write|*>)")
    server = WatchServer(
        base=base,
        name=str(raw.get("name", base)),
        client_id=raw["client_id"],
        private_key=key,
        algorithm=algorithm,
        kid=str(raw.get("kid") or thumbprint(key)),
        scopes=scopes,
        token_endpoint=raw.get("token_endpoint"),
        subscriptions=bool(raw.get("subscriptions", True)),
        subscription_topic=raw.get("subscription_topic"),
    )
    missing = [f"{t}.{a}" for t, a in READ_ACCESS.items() if not server.may(t, a)]
    if write_back != "off" and not server.may(write_back, "c"):
        missing.append(f"{write_back}.c (CDS_WATCH_WRITE_BACK)")
    if missing:
        raise fail(f"scopes do not cover {', '.join(missing)}")
    return server


def _private_key(path: Path, fail: Any) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"private_key_file: cannot read it ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise fail("private_key_file: not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise fail("private_key_file: RSA keys need at least 2048 bits")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    raise fail("private_key_file: expected an RSA (RS384) or EC P-384 (ES384) key")


def thumbprint(key: PrivateKey) -> str:
    """The RFC 7638 JWK thumbprint of the public key (the usual `kid` of a registered JWKS)."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        required: tuple[str, ...] = ("e", "kty", "n")
    else:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        required = ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
