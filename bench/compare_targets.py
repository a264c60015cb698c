"""What `bench/compare` measures: the upstream alone, nginx, LiteLLM, Portkey and agent-proxy.

Each target is started pinned to its own CPU (`taskset`), on a free loopback port, in front of
the same fake upstream; peers that are not installed are skipped and named. LiteLLM and
Portkey live under a cache directory (`--install` puts them there), never in the project's venv.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-proxy-bench"
LITELLM = CACHE / "litellm" / "bin" / "litellm"
PORTKEY = CACHE / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
PORTKEY_VERSION = "1.15.2"
LITELLM_KEY = "sk-" + secrets.token_hex(32)  # LiteLLM refuses to start without a strong master key
BENCH_KEY = "bench-key-0001"  # its SHA-256 is in bench/policies/*.yaml
CHAT = "/v1/chat/completions"


@dataclass
class Target:
    name: str
    label: str
    installed: Callable[[], str | None]  # None when ready, else what is missing
    command: Callable[[int, str, Path], list[str]]  # (port, upstream origin, work dir) -> argv
    headers: Callable[[str], dict[str, str]] = lambda upstream: {}
    path: str = CHAT
    ready_path: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    all_cpus: bool = False  # pinned to every CPU, not to the target's own


def _which(name: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(name) else f"`{name}` not found (apt-get install {name})"


def _exists(path: Path, how: str) -> Callable[[], str | None]:
    return lambda: None if path.exists() else f"{path} not found ({how})"


def _nginx(port: int, upstream: str, work: Path) -> list[str]:
    conf = work / "nginx.conf"
    host_port = upstream.removeprefix("http://")
    conf.write_text(
        textwrap.dedent(f"""\
        worker_processes 1;
        daemon off;
        pid {work}/nginx.pid;
        error_log {work}/nginx-error.log warn;
        events {{ worker_connections 4096; }}
        http {{
          access_log off;
          client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
          fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
          upstream fake {{ server {host_port}; keepalive 256; }}
          server {{
            listen 127.0.0.1:{port};
            location / {{
              proxy_pass http://fake;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
              proxy_buffering off;
            }}
          }}
        }}
        """)
    )
    return ["nginx", "-p", str(work), "-c", str(conf)]


def _litellm(port: int, upstream: str, work: Path) -> list[str]:
    config = work / "litellm.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        model_list:
          - model_name: fake-model
            litellm_params: {{model: openai/fake-model, api_base: "{upstream}/v1", api_key: upstream-key}}
        litellm_settings: {{telemetry: false, drop_params: true}}
        general_settings: {{master_key: "{LITELLM_KEY}"}}
        """)
    )
    return [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]


# Portkey 1.15.2 on Node fails every streamed request (its issue #1550): it appends its own headers to
# the upstream's Response, whose headers undici made immutable ("TypeError: immutable"). The patch
# copies a stream's response into a new Response first, and keeps what updateHeaders returns.
PORTKEY_PATCH = [
    ("this.updateHeaders(i,n.cacheStatus,o),{response:i", "i=this.updateHeaders(i,n.cacheStatus,o),{response:i"),
    (
        "updateHeaders(e,t,a){return e.headers.append(",
        "updateHeaders(e,t,a){this.context.isStreaming&&(e=new Response(e.body,{status:e.status,"
        "statusText:e.statusText,headers:new Headers(e.headers)}));return e.headers.append(",
    ),
]


def patch_portkey() -> str:
    """Apply PORTKEY_PATCH to the installed copy once; say what was done, for the report."""
    text = PORTKEY.read_text()
    if PORTKEY_PATCH[1][1] in text:
        return "patched for streams (issue #1550)"
    if any(text.count(old) != 1 for old, _ in PORTKEY_PATCH):
        return "not patched (its code differs from 1.15.2): streams may fail (issue #1550)"
    for old, new in PORTKEY_PATCH:
        text = text.replace(old, new)
    PORTKEY.write_text(text)
    return "patched for streams (issue #1550)"


def _portkey(port: int, upstream: str, work: Path) -> list[str]:
    TARGETS["portkey"].note = patch_portkey()
    return ["node", str(PORTKEY), f"--port={port}", "--headless"]


def _agent_proxy(policy: str, workers: int = 1) -> Callable[[int, str, Path], list[str]]:
    def command(port: int, upstream: str, work: Path) -> list[str]:
        argv = [sys.executable, "-m", "proxy", "serve", "--policy", str(ROOT / "bench" / "policies" / policy)]
        return [*argv, "--port", str(port), "--log-level", "warning", "--workers", str(workers)]

    return command


def _portkey_headers(upstream: str) -> dict[str, str]:
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{upstream}/v1",
        "authorization": "Bearer upstream-key",
    }


BEARER = {"authorization": f"Bearer {BENCH_KEY}"}


def _aiohttp_floor(port: int, upstream: str, work: Path) -> list[str]:
    """bench/bare_forwarder.py: aiohttp's server and client with nothing between them, the least a proxy built
    on them (as agent-proxy is) can add."""
    return [sys.executable, str(ROOT / "bench" / "bare_forwarder.py"), upstream, str(port)]


def _agent_proxy_target(name: str, label: str, policy: str, workers: int = 1, note: str = "") -> Target:
    return Target(
        name,
        label,
        lambda: None,
        _agent_proxy(policy, workers),
        headers=lambda upstream: BEARER,
        ready_path="/readyz",
        note=note,
        all_cpus=workers > 1,
    )


TARGETS = {
    t.name: t
    for t in [
        Target("nginx", "nginx (1 worker)", _which("nginx"), _nginx),
        Target(
            "litellm",
            "LiteLLM proxy",
            _exists(LITELLM, "bench/compare --install"),
            _litellm,
            headers=lambda upstream: {"authorization": f"Bearer {LITELLM_KEY}"},
            ready_path="/health/liveliness",
            env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
        ),
        Target(
            "portkey",
            f"Portkey gateway {PORTKEY_VERSION} (Node)",
            lambda: _which("node")() or _exists(PORTKEY, "bench/compare --install")(),
            _portkey,
            headers=_portkey_headers,
            env={"NODE_ENV": "production"},
        ),
        Target(
            "aiohttp-floor",
            "aiohttp floor (server and client, no policy)",
            lambda: None,
            _aiohttp_floor,
            ready_path="/healthz",
        ),
        _agent_proxy_target("auth-only", "agent-proxy, auth only", "auth-only.yaml"),
        _agent_proxy_target("full-chain", "agent-proxy, full chain", "full-chain.yaml"),
        _agent_proxy_target(
            "full-chain-2w",
            "agent-proxy, full chain, `--workers 2`",
            "full-chain.yaml",
            workers=2,
            note="two workers share both cores with the load generator and the upstream",
        ),
    ]
}


def start(target: Target, port: int, upstream: str, work: Path, cpus: str | None) -> subprocess.Popen[bytes]:
    """Start `target` pinned to `cpus`; return once it answers, or raise with its log's tail."""
    work.mkdir(parents=True, exist_ok=True)
    argv = target.command(port, upstream, work)
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = {
        **os.environ,
        **target.env,
        "BENCH_UPSTREAM_URL": upstream,
        "BENCH_LEDGER": str(work / "ledger.sqlite3"),
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{target.ready_path}", timeout=2):
                return process
        except urllib.error.HTTPError:
            return process  # it answers (a 404 on / is still an answer)
        except OSError:
            time.sleep(0.2)
    process.kill()
    tail = (work / "server.log").read_text(errors="replace")[-2000:]
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "no output")
    raise RuntimeError(f"{target.name} did not start ({last.strip()[:200]}):\n{tail}")


def install(names: list[str]) -> None:
    """Put the peers under the cache directory: LiteLLM in a venv of its own, Portkey with npm; apt for the rest."""
    missing_apt = [name for name in ("wrk", "nginx") if not shutil.which(name)]
    if missing_apt:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing_apt], check=False)
    if "litellm" in names and not LITELLM.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CACHE / "litellm")], check=True)
        pip = CACHE / "litellm" / "bin" / "pip"
        subprocess.run([str(pip), "install", "-q", "litellm[proxy]"], check=True)
    if "portkey" in names and not PORTKEY.exists():
        (CACHE / "portkey").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
            cwd=CACHE / "portkey",
            check=True,
        )
