"""Memory over a long run: is the full chain's RSS bounded and flat under steady load?

Starts bench/fast_upstream.py and the proxy with bench/policies/full-chain.yaml (as
`bench/compare` does, the proxy pinned to CPU 1 and the load to CPU 0 when there are two),
then alternates wrk slices of JSON requests at 16 connections and streamed requests at 64
(streams cut at the end of each slice, so usage estimates, and the encoding they load, are
part of the run) for `--seconds`, and prints the proxy's RSS and peak RSS after each slice.

    python bench/soak.py [--seconds 300] [--slice 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import JSON_BODY, STREAM_BODY, free_port, wait_port
from compare_load import tree_cpu_s, wrk
from compare_targets import BEARER, ROOT
from support import wait_ready


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300, help="length of the soak (default: 300)")
    parser.add_argument("--slice", type=float, default=10, help="length of each wrk slice (default: 10)")
    args = parser.parse_args()
    pinned = (os.cpu_count() or 1) >= 2
    load_cpus, proxy_cpus = ("0", "1") if pinned else (None, None)
    with tempfile.TemporaryDirectory(prefix="agent-proxy-soak-") as work:
        up_port, port = free_port(), free_port()
        up = [sys.executable, str(ROOT / "bench" / "fast_upstream.py"), "--port", str(up_port)]
        policy = ROOT / "bench" / "policies" / "full-chain.yaml"
        proxy = [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--port", str(port)]
        proxy += ["--log-level", "warning"]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BENCH_UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
            "BENCH_LEDGER": str(Path(work) / "ledger.sqlite3"),
        }
        upstream = subprocess.Popen(["taskset", "-c", load_cpus, *up] if pinned else up, stdout=subprocess.DEVNULL)
        server = subprocess.Popen(["taskset", "-c", proxy_cpus, *proxy] if pinned else proxy, cwd=ROOT, env=env)
        try:
            wait_port(up_port)
            wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            started = time.monotonic()
            print("| after s | load of the slice | requests | CPU us per request | RSS MB | peak RSS MB |")
            print("|---|---|---|---|---|---|")
            rss, peak = rss_mb(server.pid)
            print(f"| 0 | (ready) | | | {rss:.1f} | {peak:.1f} |", flush=True)
            index = 0
            while time.monotonic() - started < args.seconds:
                stream = index % 2 == 1
                before = tree_cpu_s(server.pid)
                body, connections = (STREAM_BODY, 64) if stream else (JSON_BODY, 16)
                result = wrk(url, body, BEARER, connections, args.slice, load_cpus)
                cpu_us = (tree_cpu_s(server.pid) - before) / max(result.requests, 1) * 1e6
                rss, peak = rss_mb(server.pid)
                kind = "streams, 64 conn" if stream else "JSON, 16 conn"
                print(
                    f"| {time.monotonic() - started:.0f} | {kind} | {result.requests} | {cpu_us:.0f} | "
                    f"{rss:.1f} | {peak:.1f} |",
                    flush=True,
                )
                index += 1
        finally:
            for process in (server, upstream):
                process.terminate()
                process.wait(15)


if __name__ == "__main__":
    main()
