"""The readable summary `agent-proxy check` prints: what a policy will do, never its secrets."""

from __future__ import annotations

from proxy.auth.revocation import unmatchable
from proxy.forward.registry import safe_label
from proxy.policy.compile import compile_policy
from proxy.policy.schema import Policy


def summarise(policy: Policy, source: str) -> str:
    compiled = compile_policy(policy, source, builtin_mock_url="builtin://mock")
    lines = [f"policy {source}: valid", "", "routes (first match wins):"]
    for route in compiled.routes:
        match = f"path {route.path}" if route.path else f"prefix {route.prefix}"
        methods = f" [{','.join(sorted(route.methods))}]" if route.methods else ""
        names = [t.upstream.name + (f" (model {t.model})" if t.model else "") for t in route.targets[1:]]
        fallbacks = f" then {', '.join(names)}" if names else ""
        auth = "" if route.auth_required else "  (auth: none)"
        stages = ", ".join(route.chain.names) or "none"
        lines.append(f"  {route.label:<28} {match}{methods} -> {route.upstream.name}{fallbacks}{auth}")
        lines.append(f"  {'':<28} stages: {stages}")
    lines += ["", "upstreams:"]
    for name, upstream in policy.upstreams.items():
        credential = f", injects {upstream.credentials.header}" if upstream.credentials else ""
        credential += ", signs requests" if upstream.sign_requests else ""  # auth (proxy/auth/signing.py)
        urls = ", ".join(safe_label(url) for url in upstream.urls)  # never user info
        if upstream.proxy not in (None, "direct"):
            credential += f", via {safe_label(upstream.proxy)}"
        lines.append(f"  {name:<20} {upstream.protocol:<9} {urls}{credential}")
    lines += ["", "callers:"]
    keys_by_caller: dict[str, int] = {}
    for key in policy.auth.static_keys:
        keys_by_caller[key.caller] = keys_by_caller.get(key.caller, 0) + 1
    for name in sorted(set(policy.callers) | set(keys_by_caller)):
        profile = policy.callers.get(name)
        detail = f"models {', '.join(profile.models)}" if profile else "uses the default profile"
        lines.append(f"  {name:<20} {keys_by_caller.get(name, 0)} static key(s); {detail}")
    lines += [
        "",
        f"auth: {policy.auth.mode}{_auth_sources(policy)}; state: {policy.state.backend}; "
        f"max body: {policy.server.max_body_bytes} bytes",
        _caller_side(policy),
    ]
    warnings = unmatchable(policy.auth)
    if warnings:
        lines += ["", "warnings:", *(f"  {warning}" for warning in warnings)]
    return "\n".join(lines)


def _caller_side(policy: Policy) -> str:
    server = policy.server
    return (
        f"callers' connections: head within {server.request_head_timeout_s:g} s, body within "
        f"{server.request_body_timeout_s:g} s, idle {server.keepalive_s:g} s; at most {server.max_connections} "
        f"({server.max_unauthenticated_connections} unauthenticated)"
    )


def _auth_sources(policy: Policy) -> str:
    """Which credentials are accepted (auth, docs/auth.md); never a secret."""
    auth = policy.auth
    sources = [f"{len(auth.static_keys)} static key(s)"]
    if auth.hmac_keys:
        sources.append("signed keys by " + ", ".join(key.id for key in auth.hmac_keys))
    if auth.jwt is not None:
        jwt = auth.jwt
        source = next(n for n in ("jwks_url", "jwks_file", "public_key_file", "secret") if getattr(jwt, n) is not None)
        sources.append(f"JWT {'/'.join(jwt.algorithms)} via {source}")
    if auth.revoked:
        sources.append(f"{len(auth.revoked)} revoked")
    return f" ({'; '.join(sources)})"
