"""Gateways side by side, in one run, on one machine: `bench/compare [--quick]` (see the README).

A fast fake upstream (bench/fast_upstream.py) answers chat completions at once and streams
24 events 5 ms apart. In front of it, in turn and interleaved over rounds: nothing (direct),
nginx as a bare reverse proxy, LiteLLM's proxy, the Portkey gateway, agent-proxy with only
auth and with the full chain. With two or more CPUs the load generator, this script and the
upstream are pinned to CPU 0 and each target to CPU 1 (`taskset`). Every load is bounded in
time and goes to 127.0.0.1 only.

Per target and round: wrk at 1 connection (p50, p99), at 16 (req/s and the target's CPU
seconds per 1,000 requests, from /proc, its child processes included), streams at 64
connections, and the median time to the first streamed byte from a small asyncio client.
The table shows medians over rounds, differences and ratios against direct and nginx of the
same round, and is written to bench/results/ and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_load import WRK, tree_cpu_s, tree_peak_rss_mb, ttfb_ms, wrk
from compare_targets import ROOT, TARGETS, Target, install, start

RESULTS = ROOT / "bench" / "results"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
JSON_BODY = orjson.dumps({"model": "fake-model", "messages": MESSAGES})
STREAM_BODY = orjson.dumps({"model": "fake-model", "messages": MESSAGES, "stream": True})
DIRECT = Target("direct", "upstream alone (direct)", lambda: None, lambda port, upstream, work: [])
NAN = float("nan")
TIMES = "\u00d7"  # the multiplication sign


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(target: Target, url: str, upstream: str, pid: int, args: argparse.Namespace, cpus: str | None) -> dict:
    headers = target.headers(upstream)
    one = wrk(url, JSON_BODY, headers, 1, args.seconds, cpus)
    before = tree_cpu_s(pid)
    many = wrk(url, JSON_BODY, headers, 16, args.seconds, cpus)
    cpu_s = tree_cpu_s(pid) - before
    streams = wrk(url, STREAM_BODY, headers, 64, args.seconds, cpus)
    return {
        "p50": one.p50_ms,
        "p99": one.p99_ms,
        "rps16": many.rps if not many.errors else NAN,
        "cpu_per_1000": cpu_s / many.requests * 1000 if many.requests and not many.errors else NAN,
        "streams64": streams.rps if not streams.errors else NAN,
        "ttfb": ttfb_ms(url, STREAM_BODY, headers, args.ttfb_requests),
        "errors": {"1 conn": one.errors, "16 conn": many.errors, "streams": streams.errors},
    }


def median(values: list[float]) -> float:
    kept = [v for v in values if v == v]  # NaN marks a failed measurement
    return statistics.median(kept) if kept else NAN


def fmt(value: float, pattern: str, failed: str = "fails") -> str:
    return failed if value != value else pattern.format(value)


def summarise(rounds: list[dict[str, dict]], names: list[str], labels: dict[str, str], rss: dict[str, float]) -> str:
    def per_round(name: str, key: str, against: str | None = None, ratio: bool = False) -> float:
        values = []
        for found in rounds:
            if name not in found:
                continue
            value = found[name][key]
            if against is not None:
                base = found.get(against, {}).get(key, NAN)
                value = value / base if ratio else value - base
            values.append(value)
        return median(values)

    lines = [
        f"| target | added p50, 1 conn | p99, 1 conn | req/s, 16 conn ({TIMES} direct, {TIMES} nginx) | "
        f"CPU s per 1,000 req | streams/s, 64 conn ({TIMES} direct) | added time to first byte | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        p99s = [found[name]["p99"] for found in rounds if name in found]
        p99 = f"{min(p99s):.2f}-{max(p99s):.2f} ms" if len(p99s) > 1 else f"{p99s[0]:.2f} ms"
        direct = name == "direct"
        rps = per_round(name, "rps16")
        versus = f"{per_round(name, 'rps16', 'direct', True):.3f}"
        if "nginx" in names:
            versus += f", {per_round(name, 'rps16', 'nginx', True):.3f}"
        lines.append(
            "| "
            + " | ".join(
                [
                    labels[name],
                    fmt(per_round(name, "p50", None if direct else "direct"), "{:.2f} ms"),
                    p99,
                    fmt(rps, "{:,.0f}") + ("" if rps != rps else f" ({versus})"),
                    fmt(per_round(name, "cpu_per_1000"), "{:.3f}") + (" (the upstream)" if direct else ""),
                    fmt(per_round(name, "streams64"), "{:,.0f}")
                    + ("" if direct else fmt(per_round(name, "streams64", "direct", True), " ({:.2f})", "")),
                    fmt(per_round(name, "ttfb", None if direct else "direct"), "{:.2f} ms"),
                    f"{rss[name]:.0f} MB",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    return f"{os.cpu_count()} CPUs ({model}), {int(memory) / 1024 / 1024:.1f} GiB, {platform.platform()}"


def run(args: argparse.Namespace) -> int:
    if WRK is None:
        print("bench/compare needs wrk (apt-get install wrk, or bench/compare --install)", file=sys.stderr)
        return 2
    pinned = (os.cpu_count() or 1) >= 2 and not args.no_pin
    load_cpus, target_cpus = ("0", "1") if pinned else (None, None)
    if pinned:
        os.sched_setaffinity(0, {0})
    chosen = args.targets.split(",") if args.targets else [n for n in TARGETS if n != "full-chain-2w" or not args.quick]
    unknown = [name for name in chosen if name not in TARGETS]
    if unknown:
        print(f"unknown targets: {', '.join(unknown)} (known: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    if args.install:
        install(chosen)
    skipped: dict[str, str] = {}
    for name in chosen:
        missing = TARGETS[name].installed()
        if missing:
            skipped[name] = missing
    work = Path(tempfile.mkdtemp(prefix="agent-proxy-compare-"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        up_argv = [sys.executable, str(ROOT / "bench" / "fast_upstream.py"), "--port", str(up_port)]
        processes["direct"] = subprocess.Popen(
            ["taskset", "-c", load_cpus, *up_argv] if load_cpus else up_argv, stdout=subprocess.DEVNULL
        )
        ports["direct"] = up_port
        wait_port(up_port)
        for name in chosen:
            if name in skipped:
                continue
            ports[name] = free_port()
            cpus = "0,1" if TARGETS[name].all_cpus and pinned else target_cpus
            try:
                processes[name] = start(TARGETS[name], ports[name], upstream, work / name, cpus)
            except RuntimeError as exc:
                skipped[name] = str(exc).splitlines()[0]
                print(exc, file=sys.stderr)
        names = [name for name in ["direct", *chosen] if name in processes]
        for name, why in skipped.items():
            print(f"skipped {name}: {why}", file=sys.stderr)
        rounds: list[dict[str, dict]] = []
        for index in range(args.rounds):
            found: dict[str, dict] = {}
            for name in names:
                target = DIRECT if name == "direct" else TARGETS[name]
                url = f"http://127.0.0.1:{ports[name]}{target.path}"
                found[name] = measure(target, url, upstream, processes[name].pid, args, load_cpus)
                print(f"round {index + 1}/{args.rounds} {name}: {short(found[name])}", file=sys.stderr)
            rounds.append(found)
        rss = {name: tree_peak_rss_mb(processes[name].pid) for name in names}
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)  # configs, logs and the ledger of this run
    labels = {"direct": DIRECT.label, **{name: TARGETS[name].label for name in TARGETS}}
    report = render(args, names, labels, rounds, rss, skipped, pinned)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"compare-{stamp}{'-quick' if args.quick else ''}.md"
    path.write_text(report)
    raw = {"rounds": rounds, "peak_rss_mb": rss, "skipped": skipped}
    path.with_suffix(".json").write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
    print(report)
    print(f"written to {path}", file=sys.stderr)
    return 0


def render(args, names, labels, rounds, rss, skipped, pinned) -> str:  # type: ignore[no-untyped-def]
    errors = [
        f"{labels[name]}: {kind} {count} errors"
        for name in names
        for found in rounds
        for kind, count in found[name]["errors"].items()
        if count
    ]
    pinning = (
        "load generator (wrk, one thread), time-to-first-byte client and fake upstream pinned to CPU 0, "
        "each target to CPU 1 (`taskset`)"
        if pinned
        else "no CPU pinning"
    )
    notes = [f"{labels[name]}: {TARGETS[name].note}" for name in names if name in TARGETS and TARGETS[name].note]
    parts = [
        f"## bench/compare, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"- command: `{shlex.join(['bench/compare', *sys.argv[1:]])}`",
        f"- machine: {machine()}",
        f"- {pinning}; {args.rounds} round(s), targets interleaved; wrk runs of {args.seconds:g} s; "
        f"{args.ttfb_requests} requests for the time to first byte; medians over rounds, ratios per round",
        "- upstream: bench/fast_upstream.py, JSON answers at once, streams of 24 events 5 ms apart",
        "",
        summarise(rounds, names, labels, rss),
        "",
    ]
    if notes:
        parts += [f"- {note}" for note in notes]
    if skipped:
        parts += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    if errors:
        parts += [f"- {line} (shown as `fails`)" for line in sorted(set(errors))]
    return "\n".join(parts) + "\n"


def short(found: dict) -> str:
    keys = ("p50", "p99", "rps16", "cpu_per_1000", "streams64", "ttfb")
    return " ".join(f"{key}={found[key]:.3g}" for key in keys)


def wait_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the fake upstream did not listen on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 2 s runs, about a minute (CI)")
    parser.add_argument("--rounds", type=int, help="rounds over all targets (default: 3, quick: 1)")
    parser.add_argument("--seconds", type=float, help="length of each wrk run (default: 10, quick: 2)")
    parser.add_argument("--ttfb-requests", type=int, help="streamed requests timed to first byte (default: 100)")
    parser.add_argument("--targets", help=f"comma-separated, from: {', '.join(TARGETS)} (direct always runs)")
    parser.add_argument("--install", action="store_true", help="install missing peers under ~/.cache first")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where the table goes (default: bench/results)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    args.ttfb_requests = args.ttfb_requests or (20 if args.quick else 100)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
