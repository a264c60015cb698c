"""Verification keys for JWTs: a PEM file, a shared secret, a JWKS file, or a JWKS URL.

Each key is bound to the algorithms its type can verify (RSA: RS*/PS*, EC: the ES* of
its curve, Ed25519/Ed448: EdDSA, a secret: HS*), intersected with the policy's
allowlist and the JWK's own `alg`. A token is only ever verified with an algorithm its
key is bound to, which is what rules out HS/RS confusion.

A JWKS URL is fetched with aiohttp under a timeout (never blocking the event loop),
first in the background when the policy loads, then kept for `jwks_cache_s` and
refreshed after that in the background while the known keys keep answering
(stale-while-revalidate); a token naming an unknown kid waits for a refetch, at most
once per `jwks_min_refresh_s`; concurrent requests share one fetch. If a refetch fails
the keys already known keep working. Remote sets live in `Services.jwks`, so a policy
reload does not refetch them (proxy/auth/jwks_registry.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from proxy.auth.refusals import Refused

log = logging.getLogger("agent_proxy.auth")

MAX_JWKS_BYTES = 1 << 20
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: Any
    """A cryptography public key, or the secret's bytes."""
    algorithms: frozenset[str]


def algorithms_for(key: Any, allowed: Iterable[str], jwk_alg: str | None = None) -> frozenset[str]:
    """The allowed algorithms this key can verify; empty when none."""
    if isinstance(key, bytes):
        family = {"HS256", "HS384", "HS512"}
    elif isinstance(key, rsa.RSAPublicKey):
        family = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        family = {_EC_ALGORITHMS.get(key.curve.name, "")} - {""}
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        family = {"EdDSA"}
    else:
        family = set()
    if jwk_alg is not None:
        family &= {jwk_alg}
    return frozenset(family & set(allowed))


def _public(key: Any) -> Any:
    """A private key given by mistake verifies with its public half."""
    return key.public_key() if hasattr(key, "public_key") and not isinstance(key, bytes) else key


def keys_from_jwks(data: Any, allowed: Iterable[str]) -> dict[str | None, VerificationKey]:
    """Usable signature keys of a JWKS document, by kid; unusable entries are skipped."""
    allowed = frozenset(allowed)
    entries = data.get("keys") if isinstance(data, dict) else None
    keys: dict[str | None, VerificationKey] = {}
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        if (kid is not None and not isinstance(kid, str)) or (alg is not None and not isinstance(alg, str)):
            continue
        try:
            key = _public(jwt.PyJWK(entry).key)
        except Exception:  # any malformed JWK: skip it, keep the others
            continue
        algorithms = algorithms_for(key, allowed, alg)
        if algorithms:
            keys[kid] = VerificationKey(key, algorithms)
    return keys


def lookup(keys: Mapping[str | None, VerificationKey], kid: str | None) -> VerificationKey | None:
    """A token without a kid may use a set's only key."""
    found = keys.get(kid)
    if found is None and kid is None and len(keys) == 1:
        found = next(iter(keys.values()))
    return found


class FixedKeys:
    """Keys read at policy load: a secret, a PEM public key (any kid), or a JWKS file."""

    def __init__(self, keys: dict[str | None, VerificationKey], any_kid: bool = False):
        self._keys = keys
        self._any_kid = any_kid

    async def key(self, kid: str | None) -> VerificationKey | None:
        if self._any_kid:
            return next(iter(self._keys.values()), None)
        return lookup(self._keys, kid)

    @classmethod
    def from_secret(cls, secret: str, allowed: Iterable[str]) -> FixedKeys:
        raw = secret.encode()
        return cls({None: VerificationKey(raw, algorithms_for(raw, allowed))}, any_kid=True)

    @classmethod
    def from_pem_file(cls, path: str, allowed: Iterable[str]) -> FixedKeys:
        data = _read(path, "public_key_file")
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                key: Any = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = serialization.load_pem_public_key(data)
        except ValueError:
            raise ValueError(f"auth.jwt.public_key_file: {path} is not a PEM public key or certificate") from None
        algorithms = algorithms_for(key, allowed)
        if not algorithms:
            raise ValueError(f"auth.jwt.public_key_file: the key in {path} verifies none of `algorithms`")
        return cls({None: VerificationKey(key, algorithms)}, any_kid=True)

    @classmethod
    def from_jwks_file(cls, path: str, allowed: Iterable[str]) -> FixedKeys:
        try:
            data = orjson.loads(_read(path, "jwks_file"))
        except orjson.JSONDecodeError:
            raise ValueError(f"auth.jwt.jwks_file: {path} is not JSON") from None
        keys = keys_from_jwks(data, allowed)
        if not keys:
            raise ValueError(f"auth.jwt.jwks_file: {path} has no signature key for any of `algorithms`")
        return cls(keys)


def _read(path: str, field_name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"auth.jwt.{field_name}: cannot read {path}: {exc.strerror or exc}") from None


class RemoteJwks:
    """A JWKS URL's keys: cached, refetched on unknown kids, one fetch at a time."""

    def __init__(self, url: str, allowed: Iterable[str], timeout_s: float, cache_s: float, min_refresh_s: float):
        self.url = url
        self.allowed = frozenset(allowed)
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.min_refresh_s = min_refresh_s
        self._keys: dict[str | None, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at = -float("inf")
        self._task: asyncio.Task[None] | None = None

    async def key(self, kid: str | None) -> VerificationKey | None:
        """The key for `kid`; Refused(jwks_unavailable) if the set was never fetched.

        Stale-while-revalidate: a known kid is answered from the cache at once, and an
        expired cache is refreshed in the background. Only a kid the cache does not hold
        (a rotation, or the first request) waits for a fetch, bounded by `timeout_s`.
        """
        now = time.monotonic()
        found = lookup(self._keys, kid)
        may_fetch = self._task is not None or now - self._attempted_at >= self.min_refresh_s
        if found is not None:
            fresh = self._fetched_at is not None and now - self._fetched_at < self.cache_s
            if not fresh and may_fetch:
                self._start_fetch()
            return found
        if may_fetch:
            await self._refresh()
            found = lookup(self._keys, kid)
        if found is None and self._fetched_at is None:
            raise Refused("jwks_unavailable")
        return found

    def prefetch(self) -> None:
        """Fetch in the background if the set was never fetched (at policy load, on the event loop)."""
        if self._fetched_at is None and self._task is None:
            self._start_fetch()

    async def _refresh(self) -> None:
        # Shielded: a caller that goes away must not cancel the fetch others are waiting for.
        await asyncio.shield(self._start_fetch())

    def _start_fetch(self) -> asyncio.Task[None]:
        """The fetch under way, or a new one: one at a time, whoever asks."""
        if self._task is None:
            self._attempted_at = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetched)
            self._task = task
        return self._task

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._get()
            keys = keys_from_jwks(orjson.loads(body), self.allowed)
            if not keys:
                raise ValueError("no signature key for any of the allowed algorithms")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            fields = {"host": urlsplit(self.url).hostname, "error": type(exc).__name__}
            log.warning("JWKS fetch failed; known keys stay in use", extra={"fields": fields})
            return
        self._keys, self._fetched_at = keys, time.monotonic()

    async def _get(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"accept": "application/json"}
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url, allow_redirects=False, headers=headers) as resp,
        ):
            if resp.status != 200:
                raise ValueError(f"status {resp.status}")
            chunks, size = [], 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise ValueError("JWKS document too large")
                chunks.append(chunk)
            return b"".join(chunks)
