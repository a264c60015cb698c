"""`/admin/status`: what the proxy is doing, as JSON for tools and as a live page for a person.

The page is one static document whose script asks for the JSON every two seconds (the
browser resends the admin credentials it was given for the page), so it shows the same data
as the JSON and nothing else. The data holds names the policy defines and figures the proxy
counts: never a credential, a key or a request's content.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from proxy.forward.registry import safe_label

if TYPE_CHECKING:
    from proxy.accounting.ledger import Ledger
    from proxy.metrics import Metrics
    from proxy.policy.compile import CompiledPolicy
    from proxy.policy.reload import PolicyHolder
    from proxy.services import Services


def _samples(counter: Any) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    ]


def _traffic(metrics: Metrics) -> dict[str, Any]:
    by_class: dict[str, float] = {}
    for labels, value in _samples(metrics.requests):
        by_class[labels["status_class"]] = by_class.get(labels["status_class"], 0) + value
    errors: dict[str, float] = {}
    for labels, value in _samples(metrics.errors):
        errors[labels["kind"]] = errors.get(labels["kind"], 0) + value
    return {"requests": sum(by_class.values()), "by_status": by_class, "errors_by_kind": errors}


def _cache(compiled: CompiledPolicy, metrics: Metrics) -> dict[str, Any] | None:
    """Lookups by result and what the hits saved, since the process started; None when no route caches."""
    if not any(name.partition("(")[0] == "cache" for r in compiled.routes for name in r.chain.names):
        return None
    lookups: dict[str, int] = {}
    for labels, value in _samples(metrics.cache_lookups):
        lookups[labels["result"]] = lookups.get(labels["result"], 0) + int(value)
    saved = sum(value for _, value in _samples(metrics.cache_saved_usd))
    return {"lookups": lookups, "saved_usd": round(saved, 6)}


def _start_of_day() -> float:
    now = time.time()
    return now - now % 86400


async def _callers(compiled: CompiledPolicy, ledger: Ledger | None) -> dict[str, Any]:
    """Each caller profile's limits and budgets, and what each caller spent today (UTC) by the ledger."""
    profiles = {
        name: {
            "rate_limit": profile.rate_limit.model_dump(exclude_none=True) if profile.rate_limit else None,
            "budget": profile.budget.model_dump(exclude_none=True) if profile.budget else None,
        }
        for name, profile in compiled.policy.callers.items()
    }
    today: list[dict[str, Any]] = []
    if ledger is not None:
        from proxy.accounting.report import usage_rows

        await ledger.flush()
        since = time.time() - _start_of_day()
        try:
            rows = await asyncio.to_thread(usage_rows, ledger.path, since, "caller")
        except (FileNotFoundError, ValueError):
            rows = []
        today = [{"caller": row.key, "requests": row.requests, "cost_usd": round(row.cost_usd, 6)} for row in rows]
    return {"profiles": profiles, "today": today}


async def status_data(holder: PolicyHolder, services: Services, started_at: float) -> dict[str, Any]:
    compiled = holder.current
    return {
        "policy": {
            "source": compiled.source,
            "loaded_at": compiled.loaded_at,
            "last_reload_error": holder.last_error,
            "last_reload_error_at": holder.last_error_at,
        },
        "started_at": started_at,
        "now": time.time(),
        "routes": [
            {
                "route": r.label,
                "upstream": r.upstream.name,
                "fallbacks": [f.name for f in r.fallbacks],
                "protocol": r.protocol.name,
                "stages": r.chain.names,
            }
            for r in compiled.routes
        ],
        "upstreams": {
            name: {"url": safe_label(u.base_url), "protocol": u.protocol.name} for name, u in compiled.upstreams.items()
        },
        "circuit_breakers": services.endpoints.status(),
        "traffic": _traffic(services.metrics),
        "callers": await _callers(compiled, services.ledger),
        "cache": _cache(compiled, services.metrics),
    }


def wants_html(accept: str) -> bool:
    """A browser asks for HTML first; tools ask for JSON or anything."""
    first = accept.split(",", 1)[0].strip().lower()
    return first.startswith("text/html")


# One static document: its script fetches this same path as JSON every two seconds and renders it.
PAGE = (resources.files("proxy") / "data" / "status.html").read_bytes()
