"""Instructions per request of one proxy under callgrind: a cost figure the machine's other load does not move.

The proxy (`python -m proxy serve`, the checkout given, default this one) runs under
`valgrind --tool=callgrind` in front of `bench/fast_upstream.py`; after `--warmup` JSON
requests (bench/compare's body) the counters are zeroed, `--requests` more are sent over
`--connections` keep-alive connections, and the dump's total (every thread: the ledger
writer and the log writer included) is divided by the requests. One connection keeps the
figure repeatable to about 1%: the order work happens in does not depend on timing.

    python bench/instructions.py --policy bench/policies/full-chain.yaml [--checkout DIR]
    python bench/instructions.py --stream --interval-ms 25   # per streamed answer (24 events, as bench/compare's)

Needs valgrind (Debian: `apt-get install valgrind`); a run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import orjson
from support import ROOT, free_port, start, stop, wait_ready

MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]  # bench/compare's
BODY = orjson.dumps({"model": "fake-model", "messages": MESSAGES})
STREAM_BODY = orjson.dumps({"model": "fake-model", "messages": MESSAGES, "stream": True})
HEADERS = {"Authorization": "Bearer bench-key-0001", "Content-Type": "application/json"}


async def send(url: str, requests: int, connections: int, body: bytes = BODY) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def one_connection(count: int) -> None:
            for _ in range(count):
                async with session.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"the proxy answered {response.status}")

        await asyncio.gather(*(one_connection(requests // connections) for _ in range(connections)))


def policy_for(path: Path, upstream: int, work: Path) -> Path:
    """A copy of the policy whose fixed upstream and ledger (if written out, not from BENCH_*) are this run's."""
    text = path.read_text().replace("127.0.0.1:9000", f"127.0.0.1:{upstream}")
    text = text.replace("./bench-ledger.sqlite3", str(work / "ledger.sqlite3"))
    out = work / "policy.yaml"
    out.write_text(text)
    return out


def measure(
    policy: Path,
    checkout: Path,
    warmup: int,
    requests: int,
    connections: int,
    body: bytes = BODY,
    interval_ms: float = 5,
) -> float:
    port, upstream = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        out = work / "callgrind.out"
        upstream_process = start(
            [str(ROOT / "bench" / "fast_upstream.py"), "--port", str(upstream), "--interval-ms", str(interval_ms)]
        )
        proxy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "proxy", "serve",
             "--policy", str(policy_for(policy, upstream, work)), "--port", str(port)],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(checkout), "BENCH_UPSTREAM_URL": f"http://127.0.0.1:{upstream}",
                 "BENCH_LEDGER": str(work / "ledger.sqlite3")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=300)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            asyncio.run(send(url, warmup, connections, body))
            subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, capture_output=True)
            asyncio.run(send(url, requests, connections, body))
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, capture_output=True)
        finally:
            stop([proxy, upstream_process])
        dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
        if not dumps:
            raise SystemExit("callgrind wrote no dump")
        total = re.search(r"^(?:summary|totals): (\d+)", dumps[-1].read_text(errors="replace"), re.MULTILINE)
        if total is None:
            raise SystemExit("no instruction total in the callgrind dump")
        return int(total.group(1)) / (requests // connections * connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "bench" / "policies" / "full-chain.yaml")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the source tree to run (PYTHONPATH)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--stream", action="store_true", help="streamed answers (24 events each), not JSON")
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=5,
        help="between stream events; 20 or more lets the proxy under valgrind take each event on its own, so the "
        "figure does not depend on how events happen to arrive together",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed")
    body = STREAM_BODY if args.stream else BODY
    per_request = measure(
        args.policy.resolve(),
        args.checkout.resolve(),
        args.warmup,
        args.requests,
        args.connections,
        body,
        args.interval_ms,
    )
    unit = "stream" if args.stream else "request"
    print(f"{args.policy.name} ({args.checkout}): {per_request / 1e6:.3f} M instructions per {unit}")


if __name__ == "__main__":
    main()
