"""The policy's `auth` section and the HMAC secrets that keys and tool requests are signed with."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from proxy.policy.base import Mode, Name, Strict
from proxy.policy.stage_spec import MetricSpec, StageSpec


class HmacKey(Strict):
    """A named HMAC-SHA256 secret: the id travels with what it signs, so several can be listed while rotating."""

    id: Name = Field(description="Key id carried by what this secret signs; picks the secret when verifying.")
    secret: SecretStr = Field(
        min_length=32, max_length=1024, description="At least 32 characters; use ${ENV_VAR} interpolation."
    )


Scope = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]
JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class StaticKey(Strict):
    caller: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key; never the key itself.")
    id: Name | None = Field(None, description="Key id shown in logs; defaults to the hash's first 8 digits.")
    scopes: list[Scope] = Field(default_factory=list, max_length=64, description="e.g. admin")


class JwtConfig(Strict):
    """Bearer JWTs from an identity provider, verified with exactly one key source."""

    issuer: str | None = Field(None, max_length=1024, description="Required `iss`; unset: not checked.")
    audience: str | Annotated[list[str], Field(min_length=1, max_length=32)] | None = Field(
        None, max_length=1024, description="Accepted `aud` value(s); unset: tokens that carry an `aud` are refused."
    )
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: ["RS256"],
        min_length=1,
        max_length=13,
        description="Allowlist; `none` is never accepted, and HS* only with `secret`, the others only with keys.",
    )
    jwks_file: str | None = Field(None, min_length=1, description="JWKS JSON file, read at policy load.")
    jwks_url: str | None = Field(
        None, pattern=r"^https?://\S+$", max_length=2048, description="JWKS URL: cached, refetched on an unknown kid."
    )
    public_key_file: str | None = Field(None, min_length=1, description="PEM public key file, read at policy load.")
    secret: SecretStr | None = Field(
        None, min_length=32, max_length=1024, description="Shared secret for HS* algorithms; use ${ENV_VAR}."
    )
    caller_claim: str = Field("sub", min_length=1, max_length=128, description="Claim naming the caller.")
    scopes_claim: str = Field(
        "scope", min_length=1, max_length=128, description="Claim with the scopes: a space-separated string or a list."
    )
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    jwks_timeout_s: float = Field(3.0, gt=0, le=30, description="Longest wait for the JWKS URL; then 401.")
    jwks_cache_s: float = Field(300.0, ge=1, le=86400, description="JWKS URL keys are refetched after this long.")
    jwks_min_refresh_s: float = Field(
        10.0, ge=0, le=3600, description="Least time between two JWKS fetches (unknown kids cannot hammer the IdP)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        sources = [self.jwks_file, self.jwks_url, self.public_key_file, self.secret]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("needs exactly one key source: jwks_file, jwks_url, public_key_file or secret")
        symmetric = {alg.startswith("HS") for alg in self.algorithms}
        if self.secret is not None and symmetric != {True}:
            raise ValueError("with `secret`, only HS256/HS384/HS512 may be listed in `algorithms`")
        if self.secret is None and True in symmetric:
            raise ValueError("HS* algorithms need `secret`; with public keys they would allow HS/RS confusion")
        return self


class AuthConfig(Strict):
    mode: Mode = Field("enforce", description="`shadow` records refusals without enforcing them; `off` skips auth.")
    hmac_keys: list[HmacKey] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets of keys minted by `agent-proxy keys mint`; the first signs new keys, all verify.",
    )
    jwt: JwtConfig | None = Field(None, description="Accept JWT bearer tokens.")
    static_keys: list[StaticKey] = Field(default_factory=list, max_length=10_000)
    revoked: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list,
        max_length=100_000,
        description="Key ids refused from now on: a minted key's id, a static key id, a JWT's jti (any string, as "
        "issued, or the `jti-...` id logs show for one that is not a plain token).",
    )

    @field_validator("hmac_keys")
    @classmethod
    def _unique_ids(cls, keys: list[HmacKey]) -> list[HmacKey]:
        ids = [key.id for key in keys]
        if len(set(ids)) != len(ids):
            raise ValueError("two hmac_keys share an id")
        return keys


AUTH_STAGE = StageSpec(
    name="auth",
    implementation="proxy.stages.auth",
    description="Who is calling (the `auth:` and `callers:` sections), and what they may use.",
    metrics=(
        # reason is the fixed set of proxy/auth/refusals.py
        MetricSpec(
            "auth_failures",
            "counter",
            "agent_proxy_auth_failures",
            "Refused callers by reason: 401s (missing, expired, bad_signature...) and 403s (model_not_allowed...).",
            ("reason",),
        ),
    ),
)
