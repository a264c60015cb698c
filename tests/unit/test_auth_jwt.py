"""JWT bearer tokens: every refusal, key sources (PEM, JWKS file, JWKS URL), and the policy's guard rails."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxy.auth.config import JwtConfig
from proxy.auth.jwks import keys_from_jwks
from proxy.auth.jwks_registry import JwksRegistry
from proxy.auth.jwt import JwtVerifier
from proxy.auth.refusals import Refused
from proxy.policy.load import PolicyError, policy_from_text

ISSUER = "https://idp.example.com"
AUDIENCE = "agent-proxy"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid, **extra}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "support-bot", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now, "jti": "tok-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, alg: str = "RS256", kid: str | None = "k1", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token pyjwt would refuse to produce (alg none, a PEM as HMAC secret)."""
    signing_input = b64(orjson.dumps(header)) + "." + b64(orjson.dumps(payload))
    mac = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def pem_verifier(tmp_path, key: Any, **config: Any) -> JwtVerifier:
    path = tmp_path / "key.pem"
    path.write_bytes(public_pem(key))
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "public_key_file": str(path)}
    return JwtVerifier.from_config(JwtConfig(**{**settings, **config}), JwksRegistry())


async def reason(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Refused) as info:
        await verifier.verify(token)
    return info.value.reason


async def test_a_valid_token_names_the_caller(tmp_path, rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key)
    caller = await verifier.verify(sign(rsa_key, scope="admin tools:read"))
    assert (caller.name, caller.key_id, caller.scopes) == ("support-bot", "tok-1", frozenset({"admin", "tools:read"}))


async def test_claim_names_are_configurable(tmp_path, rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key, caller_claim="client_id", scopes_claim="scp")
    token = sign(rsa_key, client_id="team.bot:prod", scp=["admin", "bad scope", 7], jti=None)
    caller = await verifier.verify(token)
    assert caller.name == "team.bot:prod" and caller.scopes == frozenset({"admin"})
    assert caller.key_id.startswith("jwt-") and caller.key_id not in token
    assert await reason(verifier, sign(rsa_key)) == "invalid_claims"  # no client_id claim


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": None}, "invalid_claims"),
        ({"nbf": int(time.time()) + 600}, "not_yet_valid"),
        ({"iat": int(time.time()) + 600}, "not_yet_valid"),
        ({"iss": "https://evil.example.com"}, "wrong_issuer"),
        ({"iss": None}, "invalid_claims"),
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"aud": None}, "invalid_claims"),
        ({"sub": None}, "invalid_claims"),
        ({"sub": 42}, "invalid_claims"),
        ({"sub": ""}, "invalid_claims"),
    ],
)
async def test_claims_are_checked(tmp_path, rsa_key, overrides, expected):
    assert await reason(pem_verifier(tmp_path, rsa_key), sign(rsa_key, **overrides)) == expected


async def test_leeway_covers_small_clock_skew(tmp_path, rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key, leeway_s=30)
    assert (await verifier.verify(sign(rsa_key, exp=int(time.time()) - 5))).name == "support-bot"
    assert (await verifier.verify(sign(rsa_key, nbf=int(time.time()) + 5))).name == "support-bot"
    strict = pem_verifier(tmp_path, rsa_key, leeway_s=0)
    assert await reason(strict, sign(rsa_key, exp=int(time.time()) - 5)) == "expired"


async def test_forged_signatures_are_refused(tmp_path, rsa_key, other_rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key)
    assert await reason(verifier, sign(other_rsa_key)) == "bad_signature"
    header, payload, signature = sign(rsa_key).split(".")
    forged_payload = b64(orjson.dumps(claims(sub="admin-bot")))
    assert await reason(verifier, f"{header}.{forged_payload}.{signature}") == "bad_signature"
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    assert await reason(verifier, f"{header}.{payload}.{flipped}") == "bad_signature"


async def test_alg_none_is_refused(tmp_path, rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key)
    for alg in ("none", "None", "NONE", ""):
        assert await reason(verifier, hand_made({"alg": alg, "typ": "JWT"}, claims(), None)) == "bad_algorithm"
    assert await reason(verifier, hand_made({"typ": "JWT"}, claims(), None)) == "bad_algorithm"


async def test_hs_rs_confusion_is_refused(tmp_path, rsa_key):
    """An HS256 token whose HMAC secret is the RSA public key PEM the proxy verifies with."""
    verifier = pem_verifier(tmp_path, rsa_key)
    token = hand_made({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(), public_pem(rsa_key))
    assert await reason(verifier, token) == "bad_algorithm"
    # Even a policy listing both families cannot be written: HS* needs `secret`, and `secret` excludes keys.
    with pytest.raises(ValueError, match="HS/RS confusion"):
        JwtConfig(algorithms=["RS256", "HS256"], public_key_file="/x.pem")


async def test_algorithms_outside_the_allowlist_are_refused(tmp_path, rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key, algorithms=["RS256"])
    assert await reason(verifier, sign(rsa_key, alg="RS512")) == "bad_algorithm"
    assert await reason(verifier, sign(rsa_key, alg="PS256")) == "bad_algorithm"
    both = pem_verifier(tmp_path, rsa_key, algorithms=["RS256", "PS256"])
    assert (await both.verify(sign(rsa_key, alg="PS256"))).name == "support-bot"


async def test_an_hs256_secret(rsa_key):
    secret = "jwt-secret-0123456789-0123456789-0123"
    verifier = JwtVerifier.from_config(JwtConfig(algorithms=["HS256"], secret=secret), JwksRegistry())
    now = int(time.time())
    assert (await verifier.verify(jwt.encode({"sub": "a", "exp": now + 60}, secret, "HS256"))).name == "a"
    wrong = jwt.encode({"sub": "a", "exp": now + 60}, "another-secret-0123456789-0123456789", "HS256")
    assert await reason(verifier, wrong) == "bad_signature"
    assert await reason(verifier, jwt.encode({"sub": "a", "exp": now + 60}, rsa_key, "RS256")) == "bad_algorithm"
    # No iss/aud configured: a token that carries an audience is refused rather than accepted blindly.
    assert await reason(verifier, jwt.encode({"sub": "a", "exp": now + 60, "aud": "x"}, secret, "HS256")) == (
        "wrong_audience"
    )


async def test_jwks_file_picks_keys_by_kid(tmp_path, rsa_key, other_rsa_key, ec_key):
    path = tmp_path / "jwks.json"
    keys = [jwk(rsa_key, "k1"), jwk(other_rsa_key, "k2", alg="RS256", use="sig"), jwk(ec_key, "e1"), {"kty": "oct"}]
    path.write_bytes(orjson.dumps({"keys": [*keys, {"kty": "RSA", "kid": "broken", "n": "x"}, "junk"]}))
    config = JwtConfig(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256", "ES256"], jwks_file=str(path))
    verifier = JwtVerifier.from_config(config, JwksRegistry())
    assert (await verifier.verify(sign(rsa_key, kid="k1"))).name == "support-bot"
    assert (await verifier.verify(sign(other_rsa_key, kid="k2"))).name == "support-bot"
    assert (await verifier.verify(sign(ec_key, alg="ES256", kid="e1"))).name == "support-bot"
    assert await reason(verifier, sign(rsa_key, kid="k3")) == "unknown_kid"
    assert await reason(verifier, sign(rsa_key, kid=None)) == "unknown_kid"  # several keys: a kid is needed
    assert await reason(verifier, sign(rsa_key, kid="k2")) == "bad_signature"
    assert await reason(verifier, sign(ec_key, alg="ES256", kid="k1")) == "bad_algorithm"  # an RSA key, not EC


def test_keys_are_bound_to_their_type_and_alg(rsa_key, ec_key):
    keys = keys_from_jwks(
        {
            "keys": [
                jwk(rsa_key, "r"),
                jwk(rsa_key, "r-ps", alg="PS256"),
                jwk(ec_key, "e"),
                jwk(rsa_key, "enc", use="enc"),
            ]
        },
        ["RS256", "PS256", "ES256", "HS256"],
    )
    assert keys["r"].algorithms == {"RS256", "PS256"}
    assert keys["r-ps"].algorithms == {"PS256"}
    assert keys["e"].algorithms == {"ES256"}
    assert "enc" not in keys


def test_policy_guard_rails(tmp_path):
    def load(jwt_yaml: str) -> None:
        policy_from_text(
            f"version: 1\nupstreams: {{up: {{url: 'http://127.0.0.1:9'}}}}\nroutes: [{{prefix: /, upstream: up}}]\n"
            f"auth:\n  jwt: {jwt_yaml}\n",
            env={},
        )

    load("{algorithms: [RS256], jwks_url: 'https://idp.example.com/jwks.json'}")
    for bad in [
        "{algorithms: [none], public_key_file: k.pem}",
        "{algorithms: [RS256]}",
        "{algorithms: [RS256], public_key_file: k.pem, jwks_file: j.json}",
        "{algorithms: [RS256], secret: 'x-0123456789-0123456789-0123456789'}",
        "{algorithms: [HS256], secret: short}",
        "{algorithms: [HS256, RS256], secret: 'x-0123456789-0123456789-0123456789'}",
        "{algorithms: [], public_key_file: k.pem}",
        "{algorithms: [RS256], public_key_file: k.pem, leeway_s: 3600}",
        "{algorithms: [RS256], jwks_url: 'ftp://x'}",
        "{algorithms: [RS256], public_key_file: k.pem, unknown: 1}",
    ]:
        with pytest.raises(PolicyError):
            load(bad)


def test_unreadable_key_files_fail_the_policy_load(tmp_path):
    for config in [
        JwtConfig(public_key_file=str(tmp_path / "missing.pem")),
        JwtConfig(jwks_file=str(tmp_path / "missing.json")),
    ]:
        with pytest.raises(ValueError, match="cannot read"):
            JwtVerifier.from_config(config, JwksRegistry())
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match="not a PEM"):
        JwtVerifier.from_config(JwtConfig(public_key_file=str(tmp_path / "bad.pem")), JwksRegistry())
    (tmp_path / "empty.json").write_text('{"keys": []}')
    with pytest.raises(ValueError, match="no signature key"):
        JwtVerifier.from_config(JwtConfig(jwks_file=str(tmp_path / "empty.json")), JwksRegistry())


# ---- JWKS URL -----------------------------------------------------------------------------------------------------


class JwksServer:
    """Serves whatever `keys` holds now; `hang` makes it accept and never answer."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hang = False
        self.hits = 0
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.hang:
            await self.release.wait()
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def jwks_server(aiohttp_server):
    state = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("/jwks.json"))  # type: ignore[attr-defined]
    yield state
    state.release.set()


def url_verifier(url: str, **settings: Any) -> JwtVerifier:
    settings = {"jwks_min_refresh_s": 0, **settings}
    config = JwtConfig(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], jwks_url=url, **settings)
    return JwtVerifier.from_config(config, JwksRegistry())


async def test_jwks_url_is_fetched_once_and_cached(jwks_server, rsa_key):
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = url_verifier(jwks_server.url)
    names = await asyncio.gather(*(verifier.verify(sign(rsa_key)) for _ in range(20)))
    assert {caller.name for caller in names} == {"support-bot"}
    await verifier.verify(sign(rsa_key))
    assert jwks_server.hits == 1


async def test_jwks_url_is_refetched_on_an_unknown_kid(jwks_server, rsa_key, other_rsa_key):
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = url_verifier(jwks_server.url)
    await verifier.verify(sign(rsa_key, kid="k1"))
    jwks_server.keys = [jwk(rsa_key, "k1"), jwk(other_rsa_key, "k2")]  # the IdP rotated
    assert (await verifier.verify(sign(other_rsa_key, kid="k2"))).name == "support-bot"
    assert jwks_server.hits == 2
    assert await reason(verifier, sign(other_rsa_key, kid="k9")) == "unknown_kid"


async def test_unknown_kids_cannot_hammer_the_idp(jwks_server, rsa_key):
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = url_verifier(jwks_server.url, jwks_min_refresh_s=3600)
    await verifier.verify(sign(rsa_key))
    for kid in ("a", "b", "c"):
        assert await reason(verifier, sign(rsa_key, kid=kid)) == "unknown_kid"
    assert jwks_server.hits == 1


async def test_a_hanging_jwks_server_is_a_401_within_its_timeout(jwks_server, rsa_key):
    jwks_server.hang = True
    verifier = url_verifier(jwks_server.url, jwks_timeout_s=0.2)
    async with asyncio.timeout(5):  # a guard against hanging, not a measurement
        results = await asyncio.gather(*(reason(verifier, sign(rsa_key)) for _ in range(5)))
    assert results == ["jwks_unavailable"] * 5
    assert jwks_server.hits == 1  # concurrent requests shared one fetch


async def test_known_keys_survive_a_failed_refetch(jwks_server, rsa_key):
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = url_verifier(jwks_server.url, jwks_timeout_s=0.2)
    await verifier.verify(sign(rsa_key))
    jwks_server.hang = True
    assert await reason(verifier, sign(rsa_key, kid="k2")) == "unknown_kid"
    assert (await verifier.verify(sign(rsa_key, kid="k1"))).name == "support-bot"


async def test_an_unreachable_jwks_url_is_a_401(rsa_key):
    from tests.fixtures.servers import free_port

    verifier = url_verifier(f"http://127.0.0.1:{free_port()}/jwks.json", jwks_timeout_s=1)
    assert await reason(verifier, sign(rsa_key)) == "jwks_unavailable"


async def test_verified_tokens_are_remembered_no_longer_than_they_are_valid(tmp_path, rsa_key):
    verifier = pem_verifier(tmp_path, rsa_key, leeway_s=10)
    exp = int(time.time()) + 20
    good = sign(rsa_key, exp=exp)
    first = await verifier.verify(good)
    assert await verifier.verify(good) is first
    assert verifier._verified[good][1] <= exp + 10
    assert await reason(verifier, good[:-4] + "AAAA") == "bad_signature"  # only the exact text is remembered


async def test_an_expired_cache_answers_at_once_and_refreshes_in_the_background(jwks_server, rsa_key, other_rsa_key):
    jwks_server.keys = [jwk(rsa_key, "k1")]
    registry = JwksRegistry()
    config = JwtConfig(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], jwks_url=jwks_server.url, jwks_min_refresh_s=0
    )
    verifier = JwtVerifier.from_config(config, registry)
    registry.prefetch()  # as at policy load
    (remote,) = registry._sets.values()
    await remote._task
    assert jwks_server.hits == 1
    remote._fetched_at -= config.jwks_cache_s  # the cache has expired
    jwks_server.hang = True  # and the identity provider is slow now
    async with asyncio.timeout(5):  # a guard against hanging, not a measurement
        caller = await verifier.verify(sign(rsa_key, kid="k1"))
    assert caller.name == "support-bot"
    assert remote._task is not None and not remote._task.done()  # answered; the refetch goes on behind
    jwks_server.keys = [jwk(other_rsa_key, "k2")]
    jwks_server.release.set()
    await remote._task
    assert (await verifier.verify(sign(other_rsa_key, kid="k2"))).name == "support-bot"
    assert jwks_server.hits == 2
