"""A policy pays in memory only for the libraries its stages use: each is imported when such a
policy compiles (in the loading thread), never by a policy that does not use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("jwt", "cryptography", "jsonschema", "redis", "regex", "tiktoken", "numpy", "onnxruntime", "opentelemetry")
COMPILE = """
import json, sys
from proxy.policy.compile import compile_policy
from proxy.policy.load import load_policy
compile_policy(load_policy(sys.argv[1], env={"BENCH_UPSTREAM_URL": "http://127.0.0.1:9", "BENCH_LEDGER": ""}))
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[2:])))
"""


def imported_after_compiling(policy: Path) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", COMPILE, str(policy), *OPTIONAL],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def test_the_full_chain_imports_none_of_the_optional_libraries():
    assert imported_after_compiling(ROOT / "bench" / "policies" / "full-chain.yaml") == set()


def test_jwt_auth_imports_pyjwt_and_cryptography_when_the_policy_compiles():
    assert imported_after_compiling(ROOT / "policies" / "examples" / "auth.yaml") >= {"jwt", "cryptography"}


def test_tool_governance_imports_jsonschema_when_the_policy_compiles():
    assert "jsonschema" in imported_after_compiling(ROOT / "policies" / "examples" / "mcp.yaml")
