"""The worst request latency while the proxy does slow work beside the requests.

Four runs of the same steady load (keep-alive POSTs to the built-in mock, a few at a time),
each against a fresh `agent-proxy serve` process:

- baseline: nothing else happens;
- reload: the policy has 10,000 static keys and is edited every `--reload-every` seconds, so
  the watcher reads, validates and compiles it again and again;
- jwks: callers present JWTs whose keys come from a JWKS URL that takes `--jwks-delay`
  seconds to answer, and the key cache expires every second;
- stderr: the proxy's stderr is a pipe nobody reads during the run (a stuck log shipper);
- yaml (no load, this checkout only): the time to refuse an alias bomb and a recursive
  alias, and to load the 10,000-key policy.

For each: requests, p50, p99 and max latency in milliseconds, and for reload the time a
reload took (file written to `agent_proxy_policy_reloads_total{result="ok"}` moved).
`--root DIR` runs the proxy from another checkout (e.g. `git archive` of an older commit),
for a before/after. Run:
    python bench/background_work.py [--seconds 6] [--concurrency 4] [--root DIR]
Figures are for this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import jwt
import orjson
import support
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

DEMO_KEY = "demo-key-1"
PAYLOAD = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]})
ISSUER, AUDIENCE = "https://idp.bench", "agent-proxy"
REQUEST_TIMEOUT_S = 10.0


def policy(port: int, auth: str, static_keys: int = 0, comment: str = "") -> str:
    keys = "".join(f"    - {{caller: c{i}, sha256: '{i:064x}'}}\n" for i in range(1, static_keys))
    return f"""# {comment}
version: 1
server: {{host: 127.0.0.1, port: {port}, reload_interval_s: 0.1}}
upstreams:
  mock: {{url: "builtin://mock", protocol: openai, credentials: {{header: Authorization, value: "Bearer up"}}}}
routes:
  - {{name: openai, prefix: /v1/, upstream: mock}}
auth:
{auth}
  static_keys:
    - {{caller: demo, sha256: {hashlib.sha256(DEMO_KEY.encode()).hexdigest()}}}
{keys}"""


class Run:
    """One proxy process under steady load; `samples` are (start time, latency) in seconds."""

    def __init__(self, root: Path, text: str, port: int, stderr: Any = subprocess.DEVNULL):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-bg-"))
        self.path = self.dir / "policy.yaml"
        self.path.write_text(text)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--policy", str(self.path), "--log-level", "info"],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        self.samples: list[tuple[float, float]] = []
        self.failures = 0

    async def ready(self, headers: dict[str, str]) -> None:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.post(self.url, data=PAYLOAD, headers=headers) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the proxy did not come up")

    async def load(self, headers: dict[str, str] | list[dict[str, str]], seconds: float, concurrency: int) -> None:
        """Requests until `seconds` have passed; one that takes past REQUEST_TIMEOUT_S counts as failed."""
        end = time.perf_counter() + seconds
        each = headers if isinstance(headers, list) else None
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def worker() -> None:
                while time.perf_counter() < end:
                    started = time.perf_counter()
                    sent = each[len(self.samples) % len(each)] if each else headers
                    try:
                        await support.one(session, self.url, PAYLOAD, sent)  # type: ignore[arg-type]
                    except (RuntimeError, aiohttp.ClientError, TimeoutError):
                        self.failures += 1
                        continue
                    self.samples.append((started, time.perf_counter() - started))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def metric(self, name: str) -> float:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            for line in (await response.text()).splitlines():
                if line.startswith(name):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> bytes:
        self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err or b""

    def summary(self) -> dict[str, float]:
        latencies = sorted(latency for _, latency in self.samples)
        if not latencies:
            return {"requests": 0}
        return {
            "requests": len(latencies),
            "failed": self.failures,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
            "max_ms": latencies[-1] * 1000,
        }


async def baseline(args: argparse.Namespace) -> dict[str, float]:
    port = support.free_port()
    run = Run(args.root, policy(port, "  mode: enforce"), port)
    headers = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
    try:
        await run.ready(headers)
        await run.load(headers, args.seconds, args.concurrency)
    finally:
        run.stop()
    return run.summary()


async def reload(args: argparse.Namespace) -> dict[str, float]:
    port = support.free_port()
    run = Run(args.root, policy(port, "  mode: enforce", static_keys=10_000), port)
    headers = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
    took: list[float] = []

    async def edit() -> None:
        for n in range(1, 1_000):
            await asyncio.sleep(args.reload_every)
            if run.samples and run.samples[-1][0] > load_end - args.reload_every:
                return
            written = time.perf_counter()
            run.path.write_text(policy(port, "  mode: enforce", static_keys=10_000, comment=f"edit {n}"))
            while await run.metric('agent_proxy_policy_reloads_total{result="ok"}') < n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            took.append(time.perf_counter() - written)

    try:
        await run.ready(headers)
        load_end = time.perf_counter() + args.seconds
        editor = asyncio.create_task(edit())
        await run.load(headers, args.seconds, args.concurrency)
        editor.cancel()
    finally:
        run.stop()
    return {**run.summary(), "reloads": len(took), "reload_s": max(took, default=0.0)}


async def jwks(args: argparse.Namespace) -> dict[str, float]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    document = {"keys": [{**public, "kid": "k1", "alg": "ES256", "use": "sig"}]}
    fetches = 0

    async def serve_jwks(request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(args.jwks_delay)
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/jwks.json", serve_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    idp_port = support.free_port()
    await web.TCPSite(runner, "127.0.0.1", idp_port).start()
    auth = (
        f"  jwt: {{issuer: '{ISSUER}', audience: {AUDIENCE}, algorithms: [ES256], "
        f"jwks_url: 'http://127.0.0.1:{idp_port}/jwks.json', jwks_timeout_s: {args.jwks_delay + 1}, "
        "jwks_cache_s: 1, jwks_min_refresh_s: 0}"
    )
    port = support.free_port()
    run = Run(args.root, policy(port, auth), port)
    now = int(time.time())
    # A token per request: the verifier remembers tokens it has seen, and would never look a key up again.
    tokens = [
        jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "demo", "iat": now, "exp": now + 3600, "jti": str(n)},
            key,
            "ES256",
            headers={"kid": "k1"},
        )
        for n in range(int(args.seconds * 4000))
    ]
    headers = [{"authorization": f"Bearer {token}", "content-type": "application/json"} for token in tokens]
    try:
        await run.ready(headers[-1])
        await run.load(headers, args.seconds, args.concurrency)
    finally:
        run.stop()
        await runner.cleanup()
    return {**run.summary(), "jwks_fetches": fetches}


async def stderr_pipe(args: argparse.Namespace) -> dict[str, float]:
    port = support.free_port()
    run = Run(args.root, policy(port, "  mode: enforce"), port, stderr=subprocess.PIPE)
    headers = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
    try:
        await run.ready(headers)
        await run.load(headers, args.seconds, args.concurrency)  # nobody reads stderr meanwhile
    finally:
        written = run.stop()
    return {**run.summary(), "log_bytes_after": len(written)}


LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


async def yaml_refusals(args: argparse.Namespace) -> dict[str, float]:
    """Not a load run: how long the loader takes to refuse an alias bomb and a recursive alias
    (in-process, this checkout's loader only), and to load the 10,000-key policy."""
    sys.path.insert(0, str(support.ROOT))
    from proxy.policy.load import PolicyError, policy_from_text

    def took(text: str) -> float:
        started = time.perf_counter()
        with contextlib.suppress(PolicyError):
            policy_from_text(text, env={})
        return (time.perf_counter() - started) * 1000

    return {
        "alias_bomb_ms": min(took("version: 1\n" + LAUGHS) for _ in range(5)),
        "recursive_alias_ms": min(took("version: 1\nroutes: &r [*r]\n") for _ in range(5)),
        "keys_10k_load_ms": min(took(policy(8080, "  mode: enforce", static_keys=10_000)) for _ in range(3)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--reload-every", type=float, default=1.5)
    parser.add_argument("--jwks-delay", type=float, default=2.0, help="seconds the JWKS URL takes to answer")
    parser.add_argument("--root", type=Path, default=support.ROOT, help="the checkout whose proxy runs")
    parser.add_argument("--only", choices=["baseline", "reload", "jwks", "stderr", "yaml"], action="append")
    args = parser.parse_args()
    runs = {"baseline": baseline, "reload": reload, "jwks": jwks, "stderr": stderr_pipe, "yaml": yaml_refusals}
    print(f"proxy from {args.root}; {args.seconds:.0f} s of load per run, {args.concurrency} at a time")
    for name, bench in runs.items():
        if args.only and name not in args.only:
            continue
        result = await bench(args)
        figures = "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
        print(f"{name:9} {figures}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
