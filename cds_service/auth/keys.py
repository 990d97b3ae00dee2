"""Public verification keys from JWKs, bound to the algorithms they may verify.

The algorithm is never taken from the token alone: a key verifies a token only if the token's `alg` is on the
client's allowlist AND fits the key's own type (EC P-256 -> ES256, EC P-384 -> ES384, RSA >= 2048 bits ->
RS256/RS384) AND equals the JWK's declared `alg`, if any. HMAC and `none` can never match a key here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

MIN_RSA_BITS = 2048
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384"}

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class UnusableKey(ValueError):
    """A JWK is unusable (wrong type, private material, weak RSA, unsupported curve)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key with its id and the algorithms it can verify."""

    kid: str
    key: PublicKey
    algorithms: frozenset[str]

    def verifies(self, alg: str) -> bool:
        return alg in self.algorithms


def parse_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """A public EC or RSA JWK -> VerificationKey; raises UnusableKey naming the problem."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnusableKey("JWK without a kid")
    if any(member in jwk for member in ("d", "p", "q", "k")):
        raise UnusableKey(f"JWK {kid!r} holds private or symmetric key material")
    if jwk.get("use", "sig") != "sig":
        raise UnusableKey(f"JWK {kid!r} is not a signing key (use={jwk.get('use')!r})")
    key = _public_key(jwk, kid)
    algorithms = _algorithms_for(key)
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algorithms:
            raise UnusableKey(f"JWK {kid!r} declares alg {declared!r}, which does not fit its key")
        algorithms = frozenset({declared})
    return VerificationKey(kid, key, algorithms)


def parse_key_set(keys: Iterable[Any]) -> tuple[dict[str, VerificationKey], list[str]]:
    """Usable keys by kid, and the problems of the ones skipped (a fetched JWKS may hold other key types)."""
    usable: dict[str, VerificationKey] = {}
    problems: list[str] = []
    for jwk in keys:
        try:
            if not isinstance(jwk, Mapping):
                raise UnusableKey("JWK is not an object")
            key = parse_jwk(jwk)
        except UnusableKey as exc:
            problems.append(str(exc))
            continue
        if key.kid in usable:
            problems.append(f"duplicate kid {key.kid!r} (first kept)")
            continue
        usable[key.kid] = key
    return usable, problems


def _public_key(jwk: Mapping[str, Any], kid: str) -> PublicKey:
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            key: Any = ECAlgorithm.from_jwk(dict(jwk))
        elif kty == "RSA":
            key = RSAAlgorithm.from_jwk(dict(jwk))
        else:
            raise UnusableKey(f"JWK {kid!r} has unsupported kty {kty!r} (EC or RSA)")
    except (InvalidKeyError, ValueError, TypeError) as exc:
        if isinstance(exc, UnusableKey):
            raise
        raise UnusableKey(f"JWK {kid!r} is malformed") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise UnusableKey(f"JWK {kid!r} is not a public key")
    return key


def _algorithms_for(key: PublicKey) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnusableKey(f"RSA key shorter than {MIN_RSA_BITS} bits")
        return frozenset({"RS256", "RS384"})
    alg = _CURVES.get(key.curve.name)
    if alg is None:
        raise UnusableKey(f"unsupported EC curve {key.curve.name}")
    return frozenset({alg})
