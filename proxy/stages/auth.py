"""Who is calling, and may they do this: the auth stage and the verifier chain it shares with /admin.

Credentials come from the headers SDKs already send (`Authorization: Bearer <key>` from
OpenAI-style clients, `x-api-key` from Anthropic's) and are never forwarded upstream.
The credential's shape picks one verifier: an HMAC-signed key starts with `apk_`, a JWT
is three dot-separated base64url parts, anything else is looked up as a static key (a
shape whose verifier is not configured is treated as a static key too). Refusals are
401 for who and 403 for what, counted in `agent_proxy_auth_failures_total{reason}`.

Permissions come from the caller's profile (`callers.<name>`, else `callers.default`):
the route and a route's `tool` are checked before the body is read, the model named in
the body once it has arrived.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from proxy.auth.keys import PREFIX as HMAC_KEY_PREFIX
from proxy.auth.keys import HmacKeyVerifier
from proxy.auth.permissions import Permissions
from proxy.auth.refusals import Refused, as_error
from proxy.auth.revocation import revoked_ids, unmatchable
from proxy.auth.static import StaticKeyVerifier, sha256_hex
from proxy.errors import ProxyError
from proxy.exchange import Caller, Exchange, Reply
from proxy.logs import log_event
from proxy.metrics import Metrics
from proxy.pipeline import Stage, StageFactory
from proxy.policy.base import Mode
from proxy.policy.schema import Policy, Route

if TYPE_CHECKING:
    from proxy.auth.jwt import JwtVerifier
    from proxy.policy.context import BuildContext

__all__ = [
    "MAX_CREDENTIAL_LENGTH",
    "AuthStage",
    "Authenticator",
    "StaticKeyVerifier",  # re-exported: proxy/auth/static.py
    "presented_credential",
    "sha256_hex",
]

MAX_CREDENTIAL_LENGTH = 8192
log = logging.getLogger("agent_proxy.auth")
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def presented_credential(headers: Mapping[str, str]) -> str | None:
    """The key a caller sent, from `Authorization: Bearer` or `x-api-key`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    """One policy's verifiers (static, HMAC, JWT), revocation list and caller permissions."""

    def __init__(self, policy: Policy, metrics: Metrics, jwt: JwtVerifier | None = None):
        auth = policy.auth
        self.static = StaticKeyVerifier(auth.static_keys, policy.callers)
        self.hmac = HmacKeyVerifier(auth.hmac_keys) if auth.hmac_keys else None
        self.jwt = jwt
        self.revoked = revoked_ids(auth.revoked)  # as listed, and as the key id of a jti equal to the entry
        for warning in unmatchable(auth):
            log_event(log, "policy warning", logging.WARNING, warning=warning)
        self.permissions = {name: Permissions(profile) for name, profile in policy.callers.items()}
        self.metrics = metrics

    def refuse(self, reason: str, detail: str = "", generic: bool = False) -> ProxyError:
        """Count a refusal by reason; the caller raises the 401 or 403 returned."""
        self.metrics.auth_failures.labels(reason).inc()
        return as_error(reason, detail, generic)

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller, with its profile resolved; raises Unauthorized, or Forbidden when it has no profile."""
        credential = presented_credential(headers)
        try:
            if credential is None:
                raise Refused("missing")
            caller = await self._identify(credential)
            if caller.key_id in self.revoked:
                raise Refused("revoked")
            profile = caller.name if caller.name in self.permissions else "default"
            if profile not in self.permissions:
                raise Refused("no_profile")
        except Refused as refused:  # a JWT learns nothing of which check failed; the reason is logged
            jwt = self.jwt is not None and credential is not None and _JWT_SHAPE.fullmatch(credential) is not None
            raise self.refuse(refused.reason, generic=jwt) from None
        return caller if caller.profile == profile else replace(caller, profile=profile)

    async def _identify(self, credential: str) -> Caller:
        """The verifier the credential's shape picks; Refused is the only exception it raises."""
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            raise Refused("malformed")
        if self.hmac is not None and credential.startswith(HMAC_KEY_PREFIX):
            claims = self.hmac.verify(credential)
            return Caller(claims.caller, claims.key_id, frozenset(claims.scopes))
        if self.jwt is not None and _JWT_SHAPE.fullmatch(credential):
            return await self.jwt.verify(credential)
        caller = self.static.verify(credential)
        if caller is None:
            raise Refused("unknown_key")
        return caller

    def permissions_for(self, caller: Caller) -> Permissions:
        return self.permissions[caller.profile]

    async def require_scope(self, headers: Mapping[str, str], scope: str) -> Caller:
        """For endpoints outside the routes (/admin): a caller holding `scope`."""
        caller = await self.authenticate(headers)
        if scope not in caller.scopes:
            raise self.refuse("admin_scope_required" if scope == "admin" else "route_not_allowed")
        return caller


class AuthStage(Stage):
    name: ClassVar[str] = "auth"

    def __init__(self, factory: AuthFactory):
        super().__init__(factory.mode)
        self._auth = factory.authenticator
        self._permissions: Permissions | None = None

    async def on_request_headers(self, ex: Exchange) -> Reply | None:
        auth = self._auth
        ex.caller = caller = await auth.authenticate(ex.headers)
        self._permissions = permissions = auth.permissions_for(caller)
        if not permissions.may_use_route(ex.route.label):
            raise auth.refuse("route_not_allowed")
        tool = ex.route.tool
        if tool is not None and not permissions.may_reach_tool_server(tool):
            raise auth.refuse("tool_not_allowed")
        return None

    async def on_request_body(self, ex: Exchange) -> Reply | None:
        permissions = self._permissions
        if permissions is None or permissions.models.everything or not ex.has_llm_body:
            return None
        model = ex.protocol.request_model(ex.request_json)
        if not isinstance(model, str) or not permissions.may_use_model(model):
            shown = f" ({model[:100]})" if isinstance(model, str) else " (the request names no model)"
            raise self._auth.refuse("model_not_allowed", shown)
        return None


class AuthFactory(StageFactory):
    stage = AuthStage  # declared, so the chain skips the hooks it passes through (completion among them)

    def __init__(self, mode: Mode, authenticator: Authenticator):
        super().__init__(mode)
        self.authenticator = authenticator


def authenticator_for(ctx: BuildContext) -> Authenticator:
    """Once per policy load, shared by the auth stage of every route and the admin endpoints."""

    def make() -> Authenticator:
        jwt_config = ctx.policy.auth.jwt
        if jwt_config is None:  # pyjwt and cryptography (about 9 MB resident) only for policies that verify JWTs
            return Authenticator(ctx.policy, ctx.services.metrics)
        from proxy.auth.jwt import JwtVerifier

        return Authenticator(ctx.policy, ctx.services.metrics, JwtVerifier.from_config(jwt_config, ctx.services.jwks))

    return ctx.shared("authenticator", make)


def build(ctx: BuildContext, route: Route) -> StageFactory | None:
    authenticator = authenticator_for(ctx)  # built even when no route uses it: /admin does
    if route.auth == "none" or ctx.policy.auth.mode == "off":
        return None
    return ctx.shared("auth", lambda: AuthFactory(ctx.policy.auth.mode, authenticator))
