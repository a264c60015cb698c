"""The proxy's own time per request: from its handler's start to the first byte written, less the upstream's.

Starts the mock upstream and the proxy (default chain, or with `--bare` auth and accounting
off), sends sequential chat completions, then reads the figures the proxy itself reports:
`ttfb_ms` of its log lines and `agent_proxy_upstream_response_seconds`. What the proxy adds
beyond this is the second hop itself (its HTTP server, the loopback wake-ups). Run:
  python bench/internal_time.py [--requests 3000] [--bare]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import statistics
import tempfile
import urllib.request

import aiohttp
import orjson
from proxy_overhead import KEY, POLICY, body
from support import Samples, free_port, load, start, stop, wait_ready

BARE = "upstream: mock, auth: none, stages: {usage: {mode: 'off'}}}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--bare", action="store_true", help="auth and accounting off")
    args = parser.parse_args()
    upstream_port, proxy_port = free_port(), free_port()
    text = POLICY.format(upstream_port=upstream_port, key_hash=hashlib.sha256(KEY.encode()).hexdigest())
    if args.bare:
        text = text.replace("upstream: mock}", BARE)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as policy:
        policy.write(text)
    log_path = policy.name + ".log"
    with open(log_path, "wb") as log:
        mock = start(["mock-upstream", "--port", str(upstream_port)])
        serve = ["serve", "--policy", policy.name, "--host", "127.0.0.1", "--port", str(proxy_port)]
        proxy = start(serve, stderr=log)
        try:
            wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
            wait_ready(f"http://127.0.0.1:{proxy_port}/readyz")
            url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
            headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}

            async def drive() -> None:
                async with aiohttp.ClientSession() as session:
                    await load(session, url, body(False, 50), headers, 1, args.requests, Samples())

            asyncio.run(drive())
            with urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/metrics") as answer:
                metrics = answer.read().decode()
        finally:
            stop([mock, proxy])
    with open(log_path, "rb") as log:
        lines = [orjson.loads(line) for line in log if b'"request_id"' in line]
    os.unlink(log_path)
    os.unlink(policy.name)
    upstream = {
        kind: float(re.search(rf'agent_proxy_upstream_response_seconds_{kind}{{upstream="mock"}} (\S+)', metrics)[1])
        for kind in ("sum", "count")
    }
    ttfb = statistics.mean(line["ttfb_ms"] for line in lines)
    upstream_ms = upstream["sum"] / upstream["count"] * 1000
    chain = "auth and accounting off" if args.bare else "default chain"
    print(f"{chain}: {len(lines)} requests, first byte {ttfb:.3f} ms after the handler's start (mean)")
    print(f"upstream {upstream_ms:.3f} ms (mean): the proxy's own time {ttfb - upstream_ms:.3f} ms per request")


if __name__ == "__main__":
    main()
