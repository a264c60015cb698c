"""What identifying a caller costs, per credential kind, in-process (no sockets).

Times `Authenticator.authenticate` (header parsing, the verifier its shape picks, the
revocation list, the profile) and `sign_request` for a small and a 1 MiB body. Run:
    python bench/auth_verify.py [--n 20000]
Figures are for this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.auth.config import HmacKey
from proxy.auth.jwks_registry import JwksRegistry
from proxy.auth.jwt import JwtVerifier
from proxy.auth.keys import mint
from proxy.auth.signing import sign_request
from proxy.exchange import Caller
from proxy.metrics import Metrics
from proxy.policy.load import policy_from_text
from proxy.stages.auth import Authenticator

HMAC_SECRET = "bench-hmac-secret-0123456789-0123456789"
HS_SECRET = "bench-jwt-secret-0123456789-0123456789-0"


def policy(jwt_yaml: str, static_keys: int) -> str:
    keys = "\n".join(
        f"    - {{caller: c{i}, sha256: '{i:064x}'}}" for i in range(1, static_keys)
    )  # hashes nobody presents, so the loop visits them all
    return f"""
version: 1
upstreams: {{up: {{url: "http://127.0.0.1:9"}}}}
routes: [{{prefix: /, upstream: up}}]
auth:
  hmac_keys: [{{id: k1, secret: {HMAC_SECRET}}}]
  jwt: {jwt_yaml}
  static_keys:
    - {{caller: demo, sha256: 0b2c109e25ac7d47cc0c56f999832031c7391890ee1893f299b5df9a9256f1d1}}
{keys}
  revoked: [{", ".join(f"r{i}" for i in range(1000))}]
"""


def headers(credential: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"authorization": f"Bearer {credential}"}))


async def per_call_us(authenticator: Authenticator, credential: str, n: int) -> float:
    sent = headers(credential)
    await authenticator.authenticate(sent)
    started = time.perf_counter()
    for _ in range(n):
        await authenticator.authenticate(sent)
    return (time.perf_counter() - started) / n * 1e6


def authenticator_for(jwt_yaml: str, static_keys: int = 1) -> Authenticator:
    parsed = policy_from_text(policy(jwt_yaml, static_keys), env={})
    assert parsed.auth.jwt is not None
    return Authenticator(parsed, Metrics(), JwtVerifier.from_config(parsed.auth.jwt, JwksRegistry()))


async def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    (tmp / "rsa.pem").write_bytes(rsa_key.public_key().public_bytes(*pem))
    (tmp / "ec.pem").write_bytes(ec_key.public_key().public_bytes(*pem))
    claims = {"sub": "demo", "exp": int(time.time()) + 3600, "jti": "bench"}

    hs = authenticator_for(f"{{algorithms: [HS256], secret: {HS_SECRET}}}")
    rs = authenticator_for(f"{{algorithms: [RS256], public_key_file: '{tmp / 'rsa.pem'}'}}")
    es = authenticator_for(f"{{algorithms: [ES256], public_key_file: '{tmp / 'ec.pem'}'}}")
    many = authenticator_for(f"{{algorithms: [HS256], secret: {HS_SECRET}}}", static_keys=1000)
    rows = [
        ("static key (1 listed)", hs, "demo-key-1"),
        ("static key (1000 listed)", many, "demo-key-1"),
        ("HMAC-signed key", hs, mint("k1", HMAC_SECRET, "demo", ["admin"], 3600)),
        ("JWT HS256", hs, jwt.encode(claims, HS_SECRET, "HS256")),
        ("JWT RS256 (2048-bit)", rs, jwt.encode(claims, rsa_key, "RS256")),
        ("JWT ES256", es, jwt.encode(claims, ec_key, "ES256")),
        ("refused: garbage", hs, "garbage"),
    ]
    print(f"{'credential':<28} {'µs per authenticate':>20}")
    for label, authenticator, credential in rows:
        try:
            figure = await per_call_us(authenticator, credential, n)
        except Exception:  # a refusal is timed too
            figure = await refused_us(authenticator, credential, n)
        print(f"{label:<28} {figure:>20.1f}")

    key = HmacKey(id="s1", secret=HMAC_SECRET)
    caller = Caller("demo", "k", frozenset({"admin"}))
    for size in (200, 1 << 20):
        body = b"x" * size
        rounds = n if size < 4096 else max(1, n // 100)
        started = time.perf_counter()
        for _ in range(rounds):
            sign_request(CIMultiDict(), key, caller, "POST", "http://tool/x?q=1", body)
        print(f"{'sign_request, ' + str(size) + ' B body':<28} {(time.perf_counter() - started) / rounds * 1e6:>20.1f}")


async def refused_us(authenticator: Authenticator, credential: str, n: int) -> float:
    sent = headers(credential)
    started = time.perf_counter()
    for _ in range(n):
        with contextlib.suppress(Exception):
            await authenticator.authenticate(sent)
    return (time.perf_counter() - started) / n * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
