"""JWT bearer tokens, verified with pyjwt against the policy's `auth.jwt`.

Order of checks: the header's `alg` must be on the allowlist (so `none` never is), the
key is found by `kid`, `alg` must be one its key type can verify (HS* only with a
secret), then pyjwt checks the signature and `exp` (required), `nbf`, `iat`, `iss` and
`aud` with the configured leeway. Whatever bytes come in, the only exception that
leaves `verify` is Refused.

Agents send the same token with every request, and pyjwt takes 100-200 µs per check, so
verified tokens are remembered (exact token text, bounded LRU) until their `exp` or for
`CACHE_S`, whichever comes first; the revocation list is still applied on every request.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Protocol

import jwt
from cachetools import LRUCache
from jwt import exceptions as jwt_errors

from proxy.auth.config import JwtConfig
from proxy.auth.jwks import FixedKeys, VerificationKey
from proxy.auth.jwks_registry import JwksRegistry
from proxy.auth.keys import valid_caller_name
from proxy.auth.refusals import Refused
from proxy.auth.revocation import jti_key_id
from proxy.exchange import Caller

_SCOPE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
MAX_SCOPES = 64
CACHE_S = 60.0
CACHE_ENTRIES = 4096

# pyjwt's exceptions, most specific first (several subclass others).
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "expired"),
    (jwt_errors.ImmatureSignatureError, "not_yet_valid"),
    (jwt_errors.InvalidIssuerError, "wrong_issuer"),
    (jwt_errors.InvalidAudienceError, "wrong_audience"),
    (jwt_errors.MissingRequiredClaimError, "invalid_claims"),
    (jwt_errors.InvalidAlgorithmError, "bad_algorithm"),
    (jwt_errors.InvalidSignatureError, "bad_signature"),
    (jwt_errors.InvalidKeyError, "bad_algorithm"),
    (jwt_errors.InvalidSubjectError, "invalid_claims"),
    (jwt_errors.InvalidJTIError, "invalid_claims"),
    (jwt_errors.InvalidIssuedAtError, "invalid_claims"),
)


class KeySource(Protocol):
    async def key(self, kid: str | None) -> VerificationKey | None: ...


def key_source(config: JwtConfig, registry: JwksRegistry) -> KeySource:
    """The configured source; files are read now, so a bad file fails the policy load."""
    allowed = config.algorithms
    if config.secret is not None:
        return FixedKeys.from_secret(config.secret.get_secret_value(), allowed)
    if config.public_key_file is not None:
        return FixedKeys.from_pem_file(config.public_key_file, allowed)
    if config.jwks_file is not None:
        return FixedKeys.from_jwks_file(config.jwks_file, allowed)
    assert config.jwks_url is not None
    return registry.get(config.jwks_url, allowed, config.jwks_timeout_s, config.jwks_cache_s, config.jwks_min_refresh_s)


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "malformed"


def _scopes(value: Any) -> frozenset[str]:
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(s for s in items[:MAX_SCOPES] if isinstance(s, str) and _SCOPE.fullmatch(s))


class JwtVerifier:
    def __init__(self, config: JwtConfig, keys: KeySource):
        self.config = config
        self.keys = keys
        self.allowed = frozenset(config.algorithms)
        required = ["exp"]
        if config.issuer is not None:
            required.append("iss")
        if config.audience is not None:
            required.append("aud")
        self._options: Any = {"require": required}
        self._verified: LRUCache[str, tuple[Caller, float]] = LRUCache(CACHE_ENTRIES)

    @classmethod
    def from_config(cls, config: JwtConfig, registry: JwksRegistry) -> JwtVerifier:
        return cls(config, key_source(config, registry))

    async def verify(self, token: str) -> Caller:
        """The caller a token names (profile still unresolved), or Refused."""
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None and now < remembered[1]:
            return remembered[0]
        caller, expires = await self._check(token)
        self._verified[token] = (caller, min(expires + self.config.leeway_s, now + CACHE_S))
        return caller

    async def _check(self, token: str) -> tuple[Caller, float]:
        try:
            header = jwt.get_unverified_header(token)
        except Exception:  # pyjwt raises DecodeError, but odd input must never escape as anything else
            raise Refused("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.allowed:
            raise Refused("bad_algorithm")
        if kid is not None and not isinstance(kid, str):
            raise Refused("malformed")
        key = await self.keys.key(kid)
        if key is None:
            raise Refused("unknown_kid")
        if alg not in key.algorithms:
            raise Refused("bad_algorithm")
        config = self.config
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_s,
                options=self._options,
            )
        except Exception as exc:  # pyjwt's errors map to reasons; anything else is a malformed token
            raise Refused(_reason(exc)) from None
        name = claims.get(config.caller_claim)
        if not isinstance(name, str) or not valid_caller_name(name):
            raise Refused("invalid_claims")
        jti = claims.get("jti")
        if isinstance(jti, str) and jti:  # any jti can be revoked: a hash of it when it is not a safe token
            key_id = jti_key_id(jti)
        else:  # safe to log, and the same for the same token
            key_id = "jwt-" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        caller = Caller(name=name, key_id=key_id, scopes=_scopes(claims.get(config.scopes_claim)))
        return caller, float(claims["exp"])
