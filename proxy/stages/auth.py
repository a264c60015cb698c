"""Who is calling: credentials from the headers SDKs already send.

OpenAI-style clients send `Authorization: Bearer <key>`, Anthropic's send
`x-api-key: <key>`. Static keys are stored as SHA-256 hashes and compared in
constant time against every stored hash, so neither timing nor an early exit tells
which key came close. The caller's credential is never forwarded upstream.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from proxy.errors import Unauthorized
from proxy.exchange import Caller, Exchange, Reply
from proxy.pipeline import Stage, StageFactory
from proxy.policy.schema import Mode, Policy, Route, StaticKey

if TYPE_CHECKING:
    from proxy.stages.registry import BuildContext

MAX_CREDENTIAL_LENGTH = 8192


def presented_credential(headers: Mapping[str, str]) -> str | None:
    """The key a caller sent, from `Authorization: Bearer` or `x-api-key`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class StaticKeyVerifier:
    """Keys listed in the policy by hash."""

    def __init__(self, keys: Sequence[StaticKey], profiles: Mapping[str, object]):
        self._keys = [
            (
                key.sha256,
                Caller(
                    name=key.caller,
                    key_id=key.id or key.sha256[:8],
                    scopes=frozenset(key.scopes),
                    profile=key.caller if key.caller in profiles else "default",
                ),
            )
            for key in keys
        ]

    def verify(self, credential: str) -> Caller | None:
        digest = sha256_hex(credential)
        found: Caller | None = None
        for stored, caller in self._keys:
            if hmac.compare_digest(stored, digest):
                found = caller
        return found


class AuthStage(Stage):
    name: ClassVar[str] = "auth"

    def __init__(self, mode: Mode, verifier: StaticKeyVerifier):
        super().__init__(mode)
        self._verifier = verifier

    async def on_request_headers(self, ex: Exchange) -> Reply | None:
        credential = presented_credential(ex.headers)
        if credential is None:
            raise Unauthorized(
                "no API key was sent: use `Authorization: Bearer <key>` or `x-api-key: <key>`",
                code="missing_api_key",
            )
        caller = self._verifier.verify(credential) if len(credential) <= MAX_CREDENTIAL_LENGTH else None
        if caller is None:
            raise Unauthorized("the API key is not valid for this proxy", code="invalid_api_key")
        ex.caller = caller
        return None


class AuthFactory(StageFactory):
    name: ClassVar[str] = "auth"

    def __init__(self, mode: Mode, verifier: StaticKeyVerifier):
        super().__init__(mode)
        self.verifier = verifier

    def create(self) -> Stage:
        return AuthStage(self.mode, self.verifier)


def verifier_for(policy: Policy) -> StaticKeyVerifier:
    return StaticKeyVerifier(policy.auth.static_keys, policy.callers)


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    if route.auth == "none" or ctx.policy.auth.mode == "off":
        return None
    return ctx.shared("auth", lambda: AuthFactory(ctx.policy.auth.mode, verifier_for(ctx.policy)))
