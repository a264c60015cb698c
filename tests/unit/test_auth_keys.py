"""HMAC-signed API keys: minting, verification, every refusal, rotation, and the verifier chain under fuzzing."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.auth.config import HmacKey
from proxy.auth.jwks_registry import JwksRegistry
from proxy.auth.jwt import JwtVerifier
from proxy.auth.keys import HmacKeyVerifier, decode_untrusted, mint, parse_ttl
from proxy.auth.refusals import Refused
from proxy.cli import main
from proxy.errors import Forbidden, ProxyError, Unauthorized
from proxy.exchange import Caller
from proxy.metrics import Metrics
from proxy.policy.load import policy_from_text
from proxy.stages.auth import Authenticator

OLD = HmacKey(id="k2025", secret="old-secret-0123456789-0123456789-0123")
NEW = HmacKey(id="k2026", secret="new-secret-0123456789-0123456789-0123")
NOW = 1_800_000_000


def key_for(caller: str = "support-bot", scopes=(), ttl_s: int = 3600, signing: HmacKey = NEW, **kw) -> str:
    return mint(signing.id, signing.secret.get_secret_value(), caller, scopes, ttl_s, now=NOW, **kw)


def refusal(verifier: HmacKeyVerifier, key: str, now: float = NOW + 1) -> str:
    with pytest.raises(Refused) as info:
        verifier.verify(key, now=now)
    return info.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("caller", ["support-bot", "team.bot:prod", "a.b.c", "x/y\\z", "név ä 🙂", "apk_x.y", "{}"])
def test_a_minted_key_verifies_and_carries_its_claims(caller):
    key = key_for(caller, ["admin", "tools:read"], key_id="abc123")
    assert key.startswith("apk_") and key.count(".") == 1
    claims = HmacKeyVerifier([NEW]).verify(key, now=NOW + 10)
    assert (claims.caller, claims.key_id, claims.kid) == (caller, "abc123", "k2026")
    assert claims.scopes == ("admin", "tools:read")
    assert (claims.issued_at, claims.expires_at) == (NOW, NOW + 3600)
    assert decode_untrusted(key) == claims


def test_each_key_gets_its_own_id():
    assert key_for().split(".")[1] != key_for().split(".")[1]
    assert decode_untrusted(key_for()).key_id != decode_untrusted(key_for()).key_id


def test_a_tampered_signature_is_refused():
    key = key_for()
    signed, mac = key.split(".")
    verifier = HmacKeyVerifier([NEW])
    for position in range(len(mac)):  # every character, including the last with its two unused bits
        for replacement in "AB":
            if mac[position] != replacement:
                forged = f"{signed}.{mac[:position]}{replacement}{mac[position + 1 :]}"
                assert refusal(verifier, forged) == "bad_signature"


def test_a_tampered_payload_is_refused():
    key = key_for("support-bot")
    signed, mac = key.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(signed[4:] + "=="))
    verifier = HmacKeyVerifier([NEW])
    for change in ({"sub": "admin-bot"}, {"scopes": ["admin"]}, {"exp": NOW + 10**8}, {"id": "other"}):
        forged = "apk_" + b64(orjson.dumps({**payload, **change})) + "." + mac
        assert refusal(verifier, forged) == "bad_signature"
    flipped = signed[:10] + ("A" if signed[10] != "A" else "B") + signed[11:]
    assert refusal(verifier, f"{flipped}.{mac}") in {"bad_signature", "malformed"}


def test_a_key_signed_with_another_secret_under_a_known_kid_is_refused():
    forged = mint(NEW.id, "attacker-secret-0123456789-0123456789", "support-bot", ["admin"], 3600, now=NOW)
    assert refusal(HmacKeyVerifier([NEW]), forged) == "bad_signature"


def test_expiry():
    key = key_for(ttl_s=60)
    verifier = HmacKeyVerifier([NEW])
    assert verifier.verify(key, now=NOW + 59).caller == "support-bot"
    assert refusal(verifier, key, now=NOW + 60) == "expired"
    minted_earlier = mint(NEW.id, NEW.secret.get_secret_value(), "bot", ttl_s=60, now=time.time() - 61)
    assert refusal(verifier, minted_earlier, now=time.time()) == "expired"


def test_unknown_kid_is_refused():
    assert refusal(HmacKeyVerifier([NEW]), key_for(signing=OLD)) == "unknown_kid"
    assert refusal(HmacKeyVerifier([]), key_for()) == "unknown_kid"


def test_rotation_old_keys_verify_until_their_secret_is_removed():
    old_key, new_key = key_for(signing=OLD), key_for(signing=NEW)
    both = HmacKeyVerifier([NEW, OLD])
    assert both.verify(old_key, now=NOW).caller == both.verify(new_key, now=NOW).caller == "support-bot"
    after = HmacKeyVerifier([NEW])
    assert after.verify(new_key, now=NOW).kid == "k2026"
    assert refusal(after, old_key) == "unknown_kid"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "apk_",
        "apk_.",
        "apk_abc",
        "apk_abc.def",
        "apk_" + b64(b"not json") + "." + "A" * 43,
        "apk_" + b64(b"[1,2]") + "." + "A" * 43,
        "apk_" + b64(b'{"v":2}') + "." + "A" * 43,
        "apk_"
        + b64(orjson.dumps({"v": 1, "kid": "k2026", "id": "x", "sub": "s", "scopes": [], "iat": 1, "exp": True}))
        + "."
        + "A" * 43,
        "apk_"
        + b64(orjson.dumps({"v": 1, "kid": "k2026", "id": "x", "sub": "", "scopes": [], "iat": 1, "exp": 2}))
        + "."
        + "A" * 43,
        "apk_" + "A" * 5 + "." + "A" * 43,  # length 5 is no valid base64
        "apk_" + "A" * 5000 + "." + "A" * 43,
        "apk_abcd.efgh.ijkl",
        "apk_abcd=." + "A" * 43,
    ],
)
def test_malformed_keys_are_refused(garbage):
    assert refusal(HmacKeyVerifier([NEW]), garbage) == "malformed"
    with pytest.raises(ValueError):
        decode_untrusted(garbage)


def test_mint_refuses_bad_input():
    for bad in [dict(caller=""), dict(caller="x" * 129), dict(caller="a\nb"), dict(scopes=["ad min"]), dict(ttl_s=0)]:
        with pytest.raises(ValueError):
            key_for(**bad)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("30d", 2592000)])
def test_parse_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "1y", "0s", "3651d"])
def test_parse_ttl_refuses(text):
    with pytest.raises(ValueError):
        parse_ttl(text)


# ---- the verifier chain: sniffing, revocation, profiles -----------------------------------------------------------

POLICY = f"""
version: 1
upstreams:
  up: {{url: "http://127.0.0.1:9"}}
routes:
  - {{prefix: /, upstream: up}}
auth:
  hmac_keys:
    - {{id: {NEW.id}, secret: "{NEW.secret.get_secret_value()}"}}
  jwt:
    algorithms: [HS256]
    secret: "jwt-secret-0123456789-0123456789-0123"
  static_keys:
    - {{caller: demo, id: demo-1, sha256: 0b2c109e25ac7d47cc0c56f999832031c7391890ee1893f299b5df9a9256f1d1}}
  revoked: [revoked-id, demo-gone]
callers:
  default: {{models: ["*"]}}
  support-bot: {{models: [gpt-4o-mini]}}
"""


@pytest.fixture(scope="module")
def authenticator() -> Authenticator:
    policy = policy_from_text(POLICY, env={})
    assert policy.auth.jwt is not None
    return Authenticator(policy, Metrics(), JwtVerifier.from_config(policy.auth.jwt, JwksRegistry()))


def bearer(credential: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"authorization": f"Bearer {credential}"}))


async def test_the_chain_picks_the_verifier_by_shape(authenticator):
    caller = await authenticator.authenticate(bearer(mint(NEW.id, NEW.secret.get_secret_value(), "support-bot")))
    assert caller.name == "support-bot" and caller.profile == "support-bot"
    caller = await authenticator.authenticate(bearer(mint(NEW.id, NEW.secret.get_secret_value(), "someone-else")))
    assert caller.profile == "default"
    assert await authenticator.authenticate(bearer("demo-key-1")) == Caller("demo", "demo-1", profile="default")


async def test_revoked_keys_are_refused(authenticator):
    key = mint(NEW.id, NEW.secret.get_secret_value(), "support-bot", key_id="revoked-id")
    with pytest.raises(Unauthorized) as info:
        await authenticator.authenticate(bearer(key))
    assert info.value.code == "revoked_api_key" and info.value.status == 401


async def test_failures_are_counted_by_reason(authenticator):
    metrics = authenticator.metrics
    before = metrics.registry.get_sample_value("agent_proxy_auth_failures_total", {"reason": "missing"}) or 0
    with pytest.raises(Unauthorized):
        await authenticator.authenticate(CIMultiDictProxy(CIMultiDict()))
    assert metrics.registry.get_sample_value("agent_proxy_auth_failures_total", {"reason": "missing"}) == before + 1


async def test_a_caller_without_profile_and_no_default_is_forbidden():
    text = POLICY.replace('  default: {models: ["*"]}\n', "  demo: {}\n")
    authenticator = Authenticator(policy_from_text(text, env={}), Metrics())
    key = mint(NEW.id, NEW.secret.get_secret_value(), "stranger")
    with pytest.raises(Forbidden) as info:
        await authenticator.authenticate(bearer(key))
    assert info.value.status == 403 and info.value.code == "caller_not_allowed"


CODES = {"missing_api_key", "invalid_api_key", "expired_api_key", "api_key_not_yet_valid"}
INT64 = st.integers(-(2**63), 2**63 - 1)
CREDENTIAL_SHAPES = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(exclude_categories=()), max_size=50),  # lone surrogates included
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=300).map(lambda b: "apk_" + b64(b) + "." + b64(b[:32])),
    st.dictionaries(st.sampled_from(["v", "kid", "id", "sub", "scopes", "iat", "exp"]), INT64 | st.text()).map(
        lambda d: "apk_" + b64(orjson.dumps({"v": 1, "kid": NEW.id, **d})) + "." + "A" * 43
    ),
    st.tuples(st.binary(max_size=80), st.binary(max_size=80), st.binary(max_size=80)).map(
        lambda parts: ".".join(b64(p) for p in parts)
    ),
    st.tuples(st.dictionaries(st.text(max_size=5), st.text(max_size=10) | INT64), st.binary(max_size=50)).map(
        lambda t: b64(orjson.dumps(t[0])) + "." + b64(t[1]) + "." + b64(t[1])
    ),
    st.sampled_from(["none", "HS256", "RS256", "EdDSA"]).map(
        lambda alg: b64(orjson.dumps({"alg": alg})) + "." + b64(b'{"sub":"x","exp":99999999999}') + "."
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(credential=CREDENTIAL_SHAPES)
async def test_random_credentials_never_crash_and_never_authenticate(authenticator, credential):
    for headers in ({"authorization": f"Bearer {credential}"}, {"x-api-key": credential}):
        try:
            caller = await authenticator.authenticate(CIMultiDictProxy(CIMultiDict(headers)))
        except ProxyError as err:
            assert isinstance(err, Unauthorized) and err.status == 401 and err.code in CODES
            assert len(credential.strip()) < 8 or credential.strip() not in err.message  # never echoed
        else:
            pytest.fail(f"authenticated {caller!r}")


# ---- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_mint_and_inspect(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert main(["keys", "mint", "--policy", str(policy), "--caller", "support-bot", "--scopes", "admin,x", "y"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert "support-bot" in out.err and key not in out.err
    claims = HmacKeyVerifier([NEW]).verify(key)
    assert claims.caller == "support-bot" and claims.scopes == ("admin", "x", "y")
    assert claims.expires_at - claims.issued_at == 30 * 86400

    assert main(["keys", "inspect", key]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["caller"] == "support-bot" and shown["verified"].startswith("no")
    assert main(["keys", "inspect", key, "--policy", str(policy)]) == 0
    assert orjson.loads(capsys.readouterr().out)["verified"] == "valid"
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert main(["keys", "inspect", tampered, "--policy", str(policy)]) == 1
    assert orjson.loads(capsys.readouterr().out)["verified"] == "refused: bad_signature"
    assert main(["keys", "inspect", "garbage"]) == 2


def test_cli_mint_needs_hmac_keys_and_a_profile(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace('  default: {models: ["*"]}\n', "  demo: {}\n"))
    assert main(["keys", "mint", "--policy", str(policy), "--caller", "stranger"]) == 2
    assert main(["keys", "mint", "--policy", str(policy), "--caller", "support-bot", "--kid", "nope"]) == 2
    assert main(["keys", "mint", "--policy", str(policy), "--caller", "support-bot", "--ttl", "1y"]) == 2
    hmac_keys = f'  hmac_keys:\n    - {{id: {NEW.id}, secret: "{NEW.secret.get_secret_value()}"}}\n'
    policy.write_text(POLICY.replace(hmac_keys, ""))
    assert main(["keys", "mint", "--policy", str(policy), "--caller", "support-bot"]) == 2
    assert capsys.readouterr().out == ""
