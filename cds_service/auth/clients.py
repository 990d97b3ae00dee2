"""The trusted CDS clients: loaded once at start from CDS_TRUSTED_CLIENTS_FILE (JSON or YAML) or
CDS_TRUSTED_CLIENTS (inline JSON), validated against TRUSTED_CLIENTS_SCHEMA, then checked for what a schema
cannot express. Every problem is a ConfigurationError naming the variable, the client and the field.

Transport rule for every configured URL (jwks_url, jku_allowlist, fhir_servers): https; in development mode
also http on loopback. FHIR server URLs are normalized (see security.normalize_base_url) so the runtime check
is an exact set lookup, never a prefix match (`https://ehr/fhir` must not admit `https://ehr/fhir-evil`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from cds_service.auth.keys import VerificationKey, parse_key_set
from cds_service.auth.schema import DEFAULT_ALGORITHMS, TRUSTED_CLIENTS_SCHEMA
from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.hooks.validation import describe
from cds_service.web.security import normalize_base_url, transport_allowed

FILE_VARIABLE = "CDS_TRUSTED_CLIENTS_FILE"
INLINE_VARIABLE = "CDS_TRUSTED_CLIENTS"
# The CDS Hooks Sandbox signs with a private key committed to its public repository: its tokens prove
# nothing, so it may be trusted for local trials only.
PUBLIC_KEY_ISSUERS = frozenset({"https://sandbox.cds-hooks.org"})


@dataclass(frozen=True, slots=True)
class TrustedClient:
    """One CDS client the service accepts JWTs from."""

    issuer: str
    name: str
    algorithms: frozenset[str]
    keys: Mapping[str, VerificationKey]  # inline JWKS, by kid
    jwks_url: str | None
    jku_allowlist: frozenset[str]
    fhir_servers: frozenset[str]  # normalized base URLs
    tenants: frozenset[str] | None  # None: no tenant check


class ClientRegistry:
    """Trusted clients by issuer (exact string match, as the `iss` claim must be)."""

    def __init__(self, clients: list[TrustedClient]) -> None:
        self._by_issuer = {client.issuer: client for client in clients}

    def find(self, issuer: str) -> TrustedClient | None:
        return self._by_issuer.get(issuer)

    def __len__(self) -> int:
        return len(self._by_issuer)

    @property
    def issuers(self) -> list[str]:
        return list(self._by_issuer)


def load_trusted_clients(settings: Settings) -> ClientRegistry | None:
    """The configured clients, or None when neither variable is set."""
    if settings.trusted_clients_file is not None:
        variable, path = FILE_VARIABLE, settings.trusted_clients_file
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(variable, f"cannot read {path}: {exc}") from None
        document = _decode(variable, text, yaml_syntax=path.suffix.lower() in {".yaml", ".yml"})
    elif settings.trusted_clients_json is not None:
        variable = INLINE_VARIABLE
        document = _decode(variable, settings.trusted_clients_json, yaml_syntax=False)
    else:
        return None
    return build_registry(variable, document, settings.dev_mode)


def build_registry(variable: str, document: Any, dev_mode: bool) -> ClientRegistry:
    """Validate a decoded trusted-clients document and build the registry."""
    error = best_match(Draft202012Validator(TRUSTED_CLIENTS_SCHEMA).iter_errors(document))
    if error is not None:
        raise ConfigurationError(variable, describe(error)[0])
    clients = [_client(variable, f"clients[{i}]", raw, dev_mode) for i, raw in enumerate(document["clients"])]
    issuers = [client.issuer for client in clients]
    duplicate = next((issuer for issuer in issuers if issuers.count(issuer) > 1), None)
    if duplicate is not None:
        raise ConfigurationError(variable, f"issuer {duplicate!r} is configured twice")
    return ClientRegistry(clients)


def _decode(variable: str, text: str, *, yaml_syntax: bool) -> Any:
    try:
        return yaml.safe_load(text) if yaml_syntax else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        kind = "YAML" if yaml_syntax else "JSON"
        raise ConfigurationError(variable, f"not valid {kind}: {str(exc).splitlines()[0][:200]}") from None


def _client(variable: str, where: str, raw: Mapping[str, Any], dev_mode: bool) -> TrustedClient:
    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(variable, f"{where} ({raw['issuer']}): {problem}")

    if raw["issuer"] in PUBLIC_KEY_ISSUERS and not dev_mode:
        raise fail("its signing key is public (CDS Hooks Sandbox): allowed in development mode only")
    if not any(k in raw for k in ("jwks", "jwks_url")) and not raw.get("jku_allowlist"):
        raise fail("needs its keys: jwks (inline), jwks_url or a non-empty jku_allowlist")
    algorithms = frozenset(raw.get("algorithms", DEFAULT_ALGORITHMS))
    keys: dict[str, VerificationKey] = {}
    if "jwks" in raw:
        keys, problems = parse_key_set(raw["jwks"]["keys"])
        if problems:
            raise fail(f"jwks: {problems[0]}")
        unusable = [kid for kid, key in keys.items() if not key.algorithms & algorithms]
        if unusable:
            raise fail(f"jwks: key {unusable[0]!r} fits none of the algorithms {sorted(algorithms)}")
    for field in ("jwks_url", "jku_allowlist", "fhir_servers"):
        for url in _as_list(raw.get(field)):
            if not transport_allowed(url, dev_mode):
                scheme = "https or http on loopback" if dev_mode else "https (outside development mode)"
                raise fail(f"{field}: {url!r} must be {scheme}, without credentials, query or fragment")
    return TrustedClient(
        issuer=raw["issuer"],
        name=raw.get("name", raw["issuer"]),
        algorithms=algorithms,
        keys=keys,
        jwks_url=raw.get("jwks_url"),
        jku_allowlist=frozenset(raw.get("jku_allowlist", ())),
        fhir_servers=frozenset(_normalized(url) for url in raw.get("fhir_servers", ())),
        tenants=frozenset(raw["tenants"]) if "tenants" in raw else None,
    )


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _normalized(url: str) -> str:
    normalized = normalize_base_url(url)
    assert normalized is not None  # transport_allowed accepted it, so it is a plain base URL
    return normalized
