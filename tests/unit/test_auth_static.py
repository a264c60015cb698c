"""Static caller keys: which credential a caller presented, and whether its hash is listed."""

from __future__ import annotations

import hashlib

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.auth.config import StaticKey
from proxy.errors import Unauthorized
from proxy.exchange import Caller, Exchange
from proxy.policy.compile import compile_policy
from proxy.policy.load import policy_from_text
from proxy.stages.auth import MAX_CREDENTIAL_LENGTH, AuthStage, StaticKeyVerifier, presented_credential, sha256_hex


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([("Authorization", "Bearer sk-one")], "sk-one"),
        ([("authorization", "bearer sk-one")], "sk-one"),
        ([("Authorization", "BEARER   sk-one  ")], "sk-one"),
        ([("x-api-key", "sk-ant")], "sk-ant"),
        ([("X-Api-Key", "  sk-ant ")], "sk-ant"),
        ([("Authorization", "Bearer sk-one"), ("x-api-key", "sk-ant")], "sk-one"),
        ([("Authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", "sk-ant")], "sk-ant"),
        ([("Authorization", "Bearer "), ("x-api-key", "sk-ant")], "sk-ant"),
        ([("Authorization", "Bearer")], None),
        ([("Authorization", "Basic dXNlcjpwYXNz")], None),
        ([("Authorization", "")], None),
        ([("x-api-key", "")], None),
        ([("x-api-key", "   ")], None),
        ([("api-key", "azure-style")], None),
        ([], None),
    ],
)
def test_presented_credential(sent, expected):
    assert presented_credential(headers(*sent)) == expected


def test_sha256_hex_matches_hashlib():
    assert sha256_hex("demo-key-1") == hashlib.sha256(b"demo-key-1").hexdigest()
    assert sha256_hex("demo-key-1") == "0b2c109e25ac7d47cc0c56f999832031c7391890ee1893f299b5df9a9256f1d1"
    assert sha256_hex("\udcff") == hashlib.sha256(b"\xff").hexdigest()  # undecodable header bytes do not raise


KEYS = [
    StaticKey(caller="alice", sha256=sha256_hex("alice-key"), id="alice-1", scopes=["admin"]),
    StaticKey(caller="bob", sha256=sha256_hex("bob-key")),
    StaticKey(caller="carol", sha256=sha256_hex("carol-key")),
]


def test_the_right_key_gives_its_caller():
    verifier = StaticKeyVerifier(KEYS, profiles={"alice": object(), "default": object()})
    assert verifier.verify("alice-key") == Caller("alice", "alice-1", frozenset({"admin"}), profile="alice")
    bob = verifier.verify("bob-key")
    assert bob == Caller("bob", sha256_hex("bob-key")[:8], frozenset(), profile="default")


@pytest.mark.parametrize(
    "wrong",
    ["", "alice-key ", "Alice-key", "alice-ke", "bob", sha256_hex("alice-key"), "alice-key\n", "x" * 10_000],
)
def test_other_keys_are_rejected(wrong):
    assert StaticKeyVerifier(KEYS, profiles={}).verify(wrong) is None


def test_no_keys_rejects_everything():
    assert StaticKeyVerifier([], profiles={}).verify("anything") is None


POLICY = f"""\
version: 1
upstreams:
  up: {{url: "http://127.0.0.1:9"}}
routes:
  - {{prefix: /, upstream: up}}
auth:
  static_keys:
    - {{caller: demo, sha256: {sha256_hex("demo-key-1")}}}
callers:
  demo: {{}}
"""


@pytest.fixture(scope="module")
def route():
    return compile_policy(policy_from_text(POLICY, env={})).routes[0]


def exchange(route, *sent: tuple[str, str]) -> Exchange:
    return Exchange("rid", "POST", "/v1/x", "", headers(*sent), route, route.protocol)


async def test_the_stage_identifies_the_caller(route):
    [factory] = [f for f in route.chain.factories if f.name == "auth"]
    stage = factory.create()
    assert isinstance(stage, AuthStage)
    ex = exchange(route, ("Authorization", "Bearer demo-key-1"))
    assert await stage.on_request_headers(ex) is None
    assert ex.caller is not None and ex.caller.name == "demo" and ex.caller.profile == "demo"


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ((), "missing_api_key"),
        ((("x-api-key", "wrong"),), "invalid_api_key"),
        ((("x-api-key", "x" * (MAX_CREDENTIAL_LENGTH + 1)),), "invalid_api_key"),
    ],
)
async def test_the_stage_refuses(route, sent, code):
    stage = next(f for f in route.chain.factories if f.name == "auth").create()
    ex = exchange(route, *sent)
    with pytest.raises(Unauthorized) as info:
        await stage.on_request_headers(ex)
    assert info.value.code == code and ex.caller is None
    assert "wrong" not in info.value.message
