"""What an exact token count costs: the compact counter (proxy/accounting/bpe.py) against tiktoken.

Each measure runs in a fresh process, so RSS is the encoding's own: VmRSS before loading,
once ready, and VmHWM (the peak) while loading; the load's CPU time; CPU per KB of text
(prose: the README; code: the proxy's sources; CJK: seeded random Han characters with a
punctuation mark every 12 or so, so no piece repeats), cold (a fresh process's first count)
and warm (the same text again); and the worst case: one 1 Mi-character piece (ESTIMATE_CHARS
in proxy/stages/usage.py caps an estimate's text there). tiktoken is built as the proxy built
it before: a dict of ranks from the same shipped file, dropped once its core holds its copies.
    python bench/tokens.py [--encoding o200k_base] [--skip-worst]
CPU figures are process CPU time (other work on the machine moves them less than wall time).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("tiktoken", "compact")
WORST = ("ab", "letters", "cjk-piece", "spaces")


def status() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def corpus(kind: str) -> str:
    if kind == "prose":
        return (ROOT / "README.md").read_text(encoding="utf-8")
    if kind == "code":
        return "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "proxy").rglob("*.py")))[:300_000]
    rng = random.Random(0)
    if kind == "cjk":
        return "".join(
            rng.choice("\uff0c\u3002\u3001") if rng.random() < 0.08 else chr(rng.randint(0x4E00, 0x6FFF))
            for _ in range(60_000)
        )
    n = 1 << 20  # the worst cases: one piece of 1 Mi characters
    if kind == "ab":
        return "ab" * (n // 2)
    if kind == "letters":
        return bytes(rng.choices(range(ord("a"), ord("z") + 1), k=n)).decode()
    if kind == "cjk-piece":
        return array("I", rng.choices(range(0x4E00, 0xA000), k=n)).tobytes().decode("utf-32-le")
    if kind == "spaces":
        return " " * n + "x"
    raise ValueError(kind)


def load(engine: str, name: str):
    sys.path.insert(0, str(ROOT))
    from proxy.accounting import bpe, tokens

    if engine == "compact":
        encoding = tokens.get_encoding(name)
        return encoding.count
    import tiktoken

    spec = tokens.ENCODINGS[name]
    ranks = {token: rank for rank, token in enumerate(bpe.read_tokens(name, spec["sha256"]))}
    encoding = tiktoken.Encoding(name, pat_str=spec["pat_str"], mergeable_ranks=ranks, special_tokens={})
    ranks.clear()
    return lambda text: len(encoding.encode_ordinary(text))


def child(engine: str, name: str, texts: list[str]) -> dict:
    """One process: load, then count each text twice (cold, warm)."""
    prepared = {kind: corpus(kind) for kind in texts}
    sys.path.insert(0, str(ROOT))
    import proxy.accounting.tokens  # noqa: F401  (its imports are not the encoding's memory)

    before = status()
    started = time.process_time()
    count = load(engine, name)
    loaded = time.process_time() - started
    ready = status()
    result = {
        "rss_before": before["VmRSS"],
        "rss_ready": ready["VmRSS"],
        "hwm_load": ready["VmHWM"],
        "load_cpu_s": loaded,
    }
    for kind, text in prepared.items():
        kb = len(text.encode("utf-8", "surrogatepass")) / 1024
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the count's own peak
        runs = []
        for _ in range(2):
            started = time.process_time()
            tokens = count(text)
            runs.append(time.process_time() - started)
        result[kind] = {
            "tokens": tokens,
            "kb": kb,
            "cold_us_per_kb": runs[0] / kb * 1e6,
            "warm_us_per_kb": runs[1] / kb * 1e6,
        }
        result[kind]["hwm_count"] = status()["VmHWM"]
    return result


def run(engine: str, name: str, texts: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--encoding", name, "--texts", ",".join(texts)],
        capture_output=True, text=True, check=True, timeout=1200,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoding", default="o200k_base")
    parser.add_argument("--skip-worst", action="store_true", help="leave out the 1 Mi-character pieces")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--texts", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.encoding, [t for t in args.texts.split(",") if t])))
        return
    print(f"{args.encoding}: memory and load (a fresh process each; MB)")
    print("| engine | RSS before | RSS ready | peak while loading | load CPU |")
    print("|---|---|---|---|---|")
    for engine in ENGINES:
        r = run(engine, args.encoding, [])
        print(
            f"| {engine} | {r['rss_before']:.1f} | {r['rss_ready']:.1f} | {r['hwm_load']:.1f}"
            f" | {r['load_cpu_s']:.3f} s |"
        )
    print("\nCPU per KB of text, first count in the process (cold) and the same text again (warm)")
    print("| text | KB | tokens | " + " | ".join(f"{e} cold | {e} warm" for e in ENGINES) + " |")
    print("|---|---|---|" + "---|---|" * len(ENGINES))
    results = {engine: run(engine, args.encoding, ["prose", "code", "cjk"]) for engine in ENGINES}
    for kind in ("prose", "code", "cjk"):
        first = results[ENGINES[0]][kind]
        assert all(results[e][kind]["tokens"] == first["tokens"] for e in ENGINES), kind
        cells = " | ".join(
            f"{results[e][kind]['cold_us_per_kb']:.0f} us | {results[e][kind]['warm_us_per_kb']:.0f} us"
            for e in ENGINES
        )
        print(f"| {kind} | {first['kb']:.0f} | {first['tokens']} | {cells} |")
    if args.skip_worst:
        return
    print(
        "\nWorst cases: one piece of 1 Mi characters (a process each); CPU, and peak RSS while counting over RSS ready"
    )
    print("| piece | " + " | ".join(f"{e} CPU | {e} peak" for e in ENGINES) + " |")
    print("|---|" + "---|---|" * len(ENGINES))
    for kind in WORST:
        cells = []
        for engine in ENGINES:
            try:
                r = run(engine, args.encoding, [kind])
                cells.append(
                    f"{r[kind]['cold_us_per_kb'] * r[kind]['kb'] / 1e6:.2f} s"
                    f" | {r[kind]['hwm_count'] - r['rss_ready']:+.0f} MB"
                )
            except subprocess.CalledProcessError as failed:
                cells.append("failed | " + (failed.stderr.strip().splitlines() or ["?"])[-1][:60])
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
