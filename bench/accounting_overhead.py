"""What token and cost accounting costs: the proxy with the usage stage off, on, and on with a ledger.

Same setup as bench/proxy_overhead.py (mock upstreams and proxies as separate processes, the
three modes loaded in turn, in rounds). Also times the offline tokenizer. Run:
    python bench/accounting_overhead.py [--requests 2000] [--concurrency 1 16]
Figures are for this machine only; the load generator shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from proxy_overhead import KEY, POLICY, body
from support import compare, free_port, start, stop, wait_ready

MODES = {
    "usage off": "stages: {{usage: {{mode: 'off'}}}}\n",
    "usage on": "",
    "usage+ledger": "ledger: {{path: {ledger}, flush_interval_ms: 200}}\n",
}


def tokenizer_figures() -> None:
    from proxy.accounting import tokens

    started = time.perf_counter()
    tokens.get_encoding("o200k_base")
    loaded = time.perf_counter() - started
    text = "The quick brown fox jumps over the lazy dog. " * 200
    started = time.perf_counter()
    for _ in range(100):
        count = tokens.count_tokens(text, "gpt-4o")
    per_call = (time.perf_counter() - started) / 100
    print(f"o200k_base first load {loaded * 1000:.0f} ms; {len(text)} chars ({count} tokens) counted in "
          f"{per_call * 1e6:.0f} us")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--words", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tokenizer_figures()

    processes = []
    targets: dict[str, tuple[str, dict[str, str]]] = {}
    headers = {
        "content-type": "application/json",
        "x-mock-reply-words": str(args.words),
        "authorization": f"Bearer {KEY}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for mode, extra in MODES.items():
                # an upstream per mode: the mock keeps every request it saw, which slows it down over time
                upstream_port, port = free_port(), free_port()
                policy = Path(tmp) / f"{port}.yaml"
                text = POLICY.format(upstream_port=upstream_port, key_hash=hashlib.sha256(KEY.encode()).hexdigest())
                policy.write_text(text + extra.format(ledger=Path(tmp) / f"{port}.sqlite3"))
                processes.append(start(["mock-upstream", "--port", str(upstream_port)]))
                processes.append(start(["serve", "--policy", str(policy), "--port", str(port)]))
                wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
                wait_ready(f"http://127.0.0.1:{port}/readyz")
                targets[mode] = (f"http://127.0.0.1:{port}/v1/chat/completions", headers)
            print(f"{'mode':<14}{'path':>7}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
            for stream in (False, True):
                for concurrency in args.concurrency:
                    payload = body(stream, args.words)
                    results = asyncio.run(compare(targets, payload, concurrency, args.requests, args.rounds))
                    for mode, r in results.items():
                        print(
                            f"{mode:<14}{'stream' if stream else 'json':>7}{concurrency:>5}{r.rps:>9.0f}"
                            f"{r.p(0.5):>9.2f}{r.p(0.99):>9.2f}"
                        )
        finally:
            stop(processes, timeout=20)


if __name__ == "__main__":
    main()
