"""A validated `Policy` compiled into what the hot path reads: routes, upstreams, chains.

Everything a request needs is looked up here once per policy load, so handling a
request is a route match and attribute reads. A compiled policy is immutable; a
reload builds a new one and swaps a single reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from pathlib import Path
from urllib.parse import quote

from proxy.forward.balancer import Balancer
from proxy.forward.bounds import ResponseLimits, Timeouts
from proxy.forward.config import DegradedReplies
from proxy.forward.targets import RetryPolicy, build_balancer
from proxy.forward.transport import resolve_proxy
from proxy.host_check import HostRules
from proxy.pipeline import Chain, StageFactory
from proxy.policy.context import BuildContext
from proxy.policy.schema import Policy, Route, Upstream
from proxy.policy.stage_order import STAGE_ORDER
from proxy.protocols import PROTOCOLS, Protocol
from proxy.services import Services
from proxy.stages.auth import Authenticator, authenticator_for

BUILTIN_MOCK = "builtin://mock"

Builder = Callable[[BuildContext, Route], StageFactory | None]


def _host_rules(policy: Policy, route: Route) -> HostRules:
    server = policy.server
    hosts = server.allowed_hosts if route.allowed_hosts is None else route.allowed_hosts
    origins = server.allowed_origins if route.allowed_origins is None else route.allowed_origins
    return HostRules.build(hosts, origins, server.host)


@cache
def stage_builders() -> tuple[Builder, ...]:
    """Each declared stage's `build`, in the fixed order, imported from the module its declaration names."""
    return tuple(import_module(spec.implementation).build for spec in STAGE_ORDER)


@dataclass(frozen=True, slots=True)
class CompiledUpstream:
    name: str
    base_url: str
    protocol: Protocol
    inject_headers: tuple[tuple[str, str], ...]
    timeouts: Timeouts
    limits: ResponseLimits
    proxies: dict[str, str | None]  # the HTTP proxy of each endpoint URL, resolved once at load
    config: Upstream
    balancer: Balancer  # its endpoints (breaker, in-flight count) are process-wide, from `Services.endpoints`
    retry: RetryPolicy
    failure_statuses: frozenset[int]  # response statuses that count against an endpoint's breaker

    def __repr__(self) -> str:  # never show injected credentials
        return f"CompiledUpstream({self.name!r}, {self.base_url!r})"


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream a route may be served by, in order: the primary, then the fallbacks."""

    upstream: CompiledUpstream
    model: str | None = None  # sent instead of the caller's model


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    label: str
    path: str | None
    prefix: str | None
    methods: frozenset[str] | None
    upstream: CompiledUpstream
    fallbacks: tuple[CompiledUpstream, ...]
    chain: Chain
    rewrite_prefix: str | None
    tool: str | None
    auth_required: bool
    targets: tuple[Target, ...] = ()  # the upstream, then the fallbacks, each with its model rewrite
    retry_unsafe: bool = False
    degraded: DegradedReplies | None = None
    forwarded_headers: str = "strip"  # strip | append (proxy/forward/headers.py)
    host_rules: HostRules = field(
        default_factory=lambda: HostRules.build((), ())
    )  # which Host and Origin may reach it (proxy/host_check.py)

    @property
    def protocol(self) -> Protocol:
        return self.upstream.protocol

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path is not None:
            return path == self.path
        return path.startswith(self.prefix)  # type: ignore[arg-type]

    def upstream_path(self, raw_path: str, path: str) -> str:
        """The path forwarded, still percent-encoded as the caller sent it, with the route's rewrite applied."""
        if self.rewrite_prefix is None or self.prefix is None:
            return raw_path
        if not raw_path.startswith(self.prefix):  # the caller encoded characters of the prefix itself
            raw_path = quote(path, safe="/:@!$&'()*+,;=-._~")
        forwarded = self.rewrite_prefix + raw_path[len(self.prefix) :]
        return forwarded if forwarded.startswith("/") else "/" + forwarded


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy: Policy
    routes: tuple[CompiledRoute, ...]
    upstreams: dict[str, CompiledUpstream]
    verifier: Authenticator  # the auth stage's verifiers, also used by /admin
    source: str = "<policy>"
    loaded_at: float = field(default_factory=time.time)
    host_rules: HostRules = field(default_factory=lambda: HostRules.build((), ()))  # the server's, for /admin

    def match(self, path: str, method: str) -> CompiledRoute | None:
        for route in self.routes:
            if route.matches(path, method):
                return route
        return None

    @property
    def max_body_bytes(self) -> int:
        return self.policy.server.max_body_bytes


def uses_builtin_mock(policy: Policy) -> bool:
    return any(url == BUILTIN_MOCK for u in policy.upstreams.values() for url in u.urls)


def _compile_upstream(
    name: str, upstream: Upstream, builtin_mock_url: str | None, services: Services
) -> CompiledUpstream:
    written = upstream.urls
    if BUILTIN_MOCK in written and builtin_mock_url is None:
        raise ValueError(f"upstream '{name}' uses {BUILTIN_MOCK}, which is not running")
    urls = [builtin_mock_url if url == BUILTIN_MOCK else url for url in written]
    headers = list(upstream.headers.items())
    if upstream.credentials is not None:
        headers.append((upstream.credentials.header, upstream.credentials.value.get_secret_value()))
    return CompiledUpstream(
        name=name,
        base_url=urls[0],
        protocol=PROTOCOLS[upstream.protocol],
        inject_headers=tuple(headers),
        timeouts=upstream.timeouts,
        limits=upstream.limits,
        proxies={
            url: None if given == BUILTIN_MOCK else resolve_proxy(url, upstream.proxy)
            for url, given in zip(urls, written, strict=True)
        },
        config=upstream,
        balancer=build_balancer(
            services.endpoints, name, list(zip(urls, written, strict=True)), upstream.circuit_breaker, services.metrics
        ),
        retry=RetryPolicy.from_config(upstream.retries),
        failure_statuses=frozenset(upstream.circuit_breaker.failure_statuses),
    )


def compile_policy(
    policy: Policy,
    source: str | Path = "<policy>",
    builtin_mock_url: str | None = None,
    services: Services | None = None,
) -> CompiledPolicy:
    services = services or Services()
    upstreams = {name: _compile_upstream(name, u, builtin_mock_url, services) for name, u in policy.upstreams.items()}
    ctx = BuildContext(policy, services, upstreams)
    verifier = authenticator_for(ctx)
    routes = tuple(
        CompiledRoute(
            label=route.label,
            path=route.path,
            prefix=route.prefix,
            methods=frozenset(route.methods) if route.methods else None,
            upstream=upstreams[route.upstream],
            fallbacks=tuple(upstreams[name] for name in route.fallback_names),
            chain=Chain([f for build in stage_builders() if (f := build(ctx, route)) is not None]),
            rewrite_prefix=route.rewrite_prefix,
            tool=route.tool,
            auth_required=route.auth == "required" and policy.auth.mode != "off",
            targets=(
                Target(upstreams[route.upstream]),
                *(Target(upstreams[f.upstream], f.model) for f in route.fallbacks),
            ),
            retry_unsafe=route.retry_unsafe,
            forwarded_headers=route.forwarded_headers,
            degraded=route.degraded,
            host_rules=_host_rules(policy, route),
        )
        for route in policy.routes
    )
    server = policy.server
    host_rules = HostRules.build(server.allowed_hosts, server.allowed_origins, server.host)
    return CompiledPolicy(
        policy=policy, routes=routes, upstreams=upstreams, verifier=verifier, source=str(source), host_rules=host_rules
    )
