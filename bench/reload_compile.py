"""CPU time of one policy reload's compile: 200 MCP tool routes and 50 cached LLM routes, compiled
again and again against the same process services (as reloads are), so what the compile asks of
the kept-across-reloads registry (proxy/kept.py) is in the figure.

    python bench/reload_compile.py [--root DIR]   # DIR: another checkout (e.g. `git archive` of an older commit)

Prints the best of 5 rounds of 20 compiles, in CPU milliseconds per compile; figures are for
this machine only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import time
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.services import Services

routes = [f"  - {{name: t{i}, prefix: /t{i}/mcp, upstream: m, tool: s{i}, auth: none}}" for i in range(200)]
routes += [f"  - {{name: c{i}, prefix: /c{i}/v1/, upstream: o, auth: none}}" for i in range(50)]
text = '''
version: 1
upstreams:
  m: {url: "http://127.0.0.1:9", protocol: mcp}
  o: {url: "http://127.0.0.1:9", protocol: openai}
routes:
''' + "\\n".join(routes) + '''
stages:
  cache: {mode: enforce}
'''
policy = policy_from_text(text, env={})
services = Services()
compile_policy(policy, services=services)
rounds = []
for _ in range(5):
    start = time.process_time()
    for _ in range(20):
        compile_policy(policy, services=services)
    rounds.append((time.process_time() - start) / 20 * 1000)
import proxy.policy.compile as compiled
print(f"{min(rounds):.2f} {compiled.__file__}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose proxy/ is measured")
    args = parser.parse_args()
    root = args.root.resolve()
    env = os.environ | {"PYTHONPATH": str(root)}
    command = [sys.executable, "-c", MEASURE]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=True)
    best, source = done.stdout.split()
    print(f"{best} ms CPU per compile (best of 5 x 20), {source}")


if __name__ == "__main__":
    main()
