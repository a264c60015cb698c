"""What resilient forwarding costs on the happy path: microseconds per request.

Times `forward()` (endpoint pick, breaker permit, retry classification, and the verdict
the handler gives when the response is over) against a bare `open_upstream()` call, the
single attempt the handler made before breakers and retries existed. Both go to a session
stub that answers at once, so only the proxy's own work is measured: network and upstream
time, which dwarf it, are left out on purpose. Run:  python bench/resilience.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.exchange import Exchange, Outcome
from proxy.forward.attempts import forward, open_upstream
from proxy.metrics import Metrics
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text

POLICY = """
version: 1
upstreams:
  main:
    {address}
    protocol: openai
    credentials: {{header: Authorization, value: "Bearer provider-key"}}
    retries: {retries}
    circuit_breaker: {breaker}
  spare: {{url: "http://127.0.0.1:9", protocol: openai}}
routes:
  - {{prefix: /v1/, upstream: main, fallbacks: {fallbacks}}}
"""
VARIANTS = {
    "breaker off, 1 attempt": ("url: http://127.0.0.1:9", "{attempts: 1}", "{enabled: false}", "[]"),
    "breaker on, 3 attempts": ("url: http://127.0.0.1:9", "{attempts: 3}", "{}", "[]"),
    "3 endpoints + fallback": (
        "endpoints: [http://127.0.0.1:9, http://127.0.0.2:9, http://127.0.0.3:9]",
        "{attempts: 3}",
        "{}",
        "[{upstream: spare, model: small}]",
    ),
}
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello " * 50}]})


class Answer:
    status = 200
    headers: dict[str, str] = {"content-type": "application/json"}
    content_length = None  # the body is never read here
    event_stream = False
    finished = True

    def release(self) -> None:
        pass


class InstantTransport:
    """Stands in for the upstream `Transport`: the response head is there at once."""

    async def open(self, *args: Any, **kwargs: Any) -> Answer:
        return Answer()


def exchange(policy_text: str) -> Exchange:
    route = compile_policy(policy_from_text(policy_text, env={})).routes[0]
    headers = CIMultiDictProxy(CIMultiDict({"content-type": "application/json", "authorization": "Bearer caller"}))
    ex = Exchange("req-1", "POST", "/v1/chat/completions", "", headers, route, route.protocol, body=BODY)
    _ = ex.request_json  # the handler parses LLM bodies before forwarding
    ex.outcome = Outcome.OK
    return ex


async def per_request_us(ex: Exchange, resilient: bool, count: int) -> float:
    client: Any = InstantTransport()
    metrics = Metrics()
    route = ex.route
    start = time.perf_counter()
    if resilient:
        for _ in range(count):
            async with await forward(client, ex, route, metrics):  # type: ignore[union-attr]
                pass
    else:
        for _ in range(count):
            await open_upstream(client, ex, route, route.upstream)
    return (time.perf_counter() - start) / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="the median of this many rounds is reported")
    args = parser.parse_args()
    print(f"{'variant':<26}{'bare us':>10}{'forward us':>12}{'added us':>10}")
    for name, (address, retries, breaker, fallbacks) in VARIANTS.items():
        text = POLICY.format(address=address, retries=retries, breaker=breaker, fallbacks=fallbacks)
        ex = exchange(text)
        await per_request_us(ex, True, 2000)  # warm up
        bare, full = [], []
        for _ in range(args.rounds):  # interleaved, so drift on a busy machine hits both alike
            bare.append(await per_request_us(ex, False, args.requests))
            full.append(await per_request_us(ex, True, args.requests))
        added = statistics.median(f - b for f, b in zip(full, bare, strict=True))
        bare, full = statistics.median(bare), statistics.median(full)
        print(f"{name:<26}{bare:>10.2f}{full:>12.2f}{added:>10.2f}")


if __name__ == "__main__":
    asyncio.run(main())
