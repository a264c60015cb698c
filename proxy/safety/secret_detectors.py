"""Built-in detectors of secrets: provider API keys, tokens, JWTs, private keys and assigned passwords."""

from __future__ import annotations

import base64
import binascii
import re

import orjson

from proxy.safety.detector import Detector, literal_starts, make


def _pick_jwt(match: re.Match[str]) -> tuple[int, int] | None:
    head = match.group().split(".", 1)[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return None
    return match.span() if isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded) else None


def _pick_mixed(match: re.Match[str]) -> tuple[int, int] | None:
    """Random tokens mix letters and digits; `sk-this-is-not-a-key-example` does not."""
    text = match.group()
    return match.span() if any(c.isdigit() for c in text) and any(c.isalpha() for c in text) else None


_PLACEHOLDER_VALUE = re.compile(r"^(?:[<{$%\[*(]|x{4,}$|\.{3})|^(?:null|none|true|false|redacted|changeme)$", re.I)


def _pick_secret_value(match: re.Match[str]) -> tuple[int, int] | None:
    """A value that looks chosen, not a placeholder (`<your key>`, `${VAR}`, `****`) or a plain word."""
    value = match.group("v")
    if _PLACEHOLDER_VALUE.search(value) or len(set(value)) < 3:
        return None
    if value.isalpha() and len(value) < 12:
        return None
    return match.span()


def _pick_pem(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span() if re.search(r"[A-Za-z0-9+/=]{40}", match.group("body")) else None


def _settled_after_value(match: re.Match[str], length: int) -> bool:
    """The value ended on a character the text already has: nothing later changes this match."""
    return match.end() < length


def _settled_pem(match: re.Match[str], length: int) -> bool:
    return match.group("end") is not None or match.end() + 256 <= length


_AWS_KEY_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA", "APKA", "ASCA")
_KEYWORD_TAIL = r"|[A-Za-z_-]{1,24}\Z"  # part of a keyword at the very end of the text
_SECRET_KEYS = (
    r"(?:client[_-]?secret|secret[_-]?key|secret|passphrase|password|passwd|pwd|api[_-]?key|apikey|"
    r"access[_-]?token|auth[_-]?token|refresh[_-]?token|token|private[_-]?key|authorization)"
)
_VALUE = r"""[^\s"'`,;)}\]]"""
MAX_SECRET = 4096  # an assigned value longer than this is masked up to here

SECRET_DETECTORS: tuple[Detector, ...] = (
    make(
        "openai_key",
        "[API_KEY]",
        r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}(?![\w-])",
        run="[A-Za-z0-9_-]",
        pick=_pick_mixed,
    ),
    make(
        "anthropic_key",
        "[API_KEY]",
        r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,250}(?![\w-])",
        run="[A-Za-z0-9_-]",
        pick=_pick_mixed,
    ),
    make(
        "aws_access_key",
        "[AWS_ACCESS_KEY]",
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        run="[A-Z0-9]",
        start=literal_starts(_AWS_KEY_PREFIXES),
        anchor="|".join(_AWS_KEY_PREFIXES),
    ),
    make(
        "aws_secret_key",
        "[AWS_SECRET_KEY]",
        r"(?<![A-Za-z0-9])(?:aws_?)?secret_?(?:access_?)?key[\"']?[ \t]{0,4}[:=][ \t]{0,4}[\"']?"
        r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        re.IGNORECASE,
        start=re.compile(
            r"(?:aws_?)?secret_?(?:access_?)?key[\"']?[ \t]{0,4}(?:\Z|[:=])" + _KEYWORD_TAIL, re.IGNORECASE
        ),
        settled=_settled_after_value,
        value_group="v",
        anchor="[:=]",
        anchor_reach=26,
        anchor_hints=("secret",),
    ),
    make(
        "github_token",
        "[GITHUB_TOKEN]",
        r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,247})(?![\w])",
        run="[A-Za-z0-9_]",
        start=literal_starts(["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]),
        anchor="gh[pousr]_|github_pat_",
    ),
    make(
        "slack_token",
        "[SLACK_TOKEN]",
        r"(?<![\w-])(?:xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250})(?![\w-])",
        run="[A-Za-z0-9-]",
        start=literal_starts(["xox", "xapp-"]),
        pick=_pick_mixed,
        anchor="xox|xapp-",
    ),
    make(
        "stripe_key",
        "[STRIPE_KEY]",
        r"(?<![\w])(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,247}|whsec_[A-Za-z0-9+/=]{24,128})(?![\w])",
        run="[A-Za-z0-9_+/=]",
        start=literal_starts(["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"]),
        pick=_pick_mixed,
        anchor="_",  # sk_live_, rk_test_, whsec_: the first underscore is at most 5 in
        anchor_reach=5,
    ),
    make(
        "jwt",
        "[JWT]",
        r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,2048}\.eyJ[A-Za-z0-9_-]{5,8192}\.[A-Za-z0-9_-]{0,2048}(?![\w-])",
        run="[A-Za-z0-9_.-]",
        pick=_pick_jwt,
    ),
    make(
        "private_key",
        "[PRIVATE_KEY]",
        r"-----BEGIN (?P<kind>(?:[A-Z0-9]{1,12} ){0,3})PRIVATE KEY-----"
        r"(?:\s{1,8}[A-Za-z][A-Za-z-]{0,31}: [^\r\n]{0,128}){0,4}"  # Proc-Type, DEK-Info of legacy encrypted keys
        r"(?P<body>[A-Za-z0-9+/=\s]{0,16384})"
        r"(?P<end>\s{0,8}-----END (?P=kind)PRIVATE KEY-----)?",
        pick=_pick_pem,
        settled=_settled_pem,
    ),
    make(
        "password",
        "[SECRET]",
        rf"(?<![A-Za-z0-9]){_SECRET_KEYS}[\"']?[ \t]{{0,4}}[:=][ \t]{{0,4}}[\"']?"
        rf"(?:(?:bearer|basic|token)[ \t]{{1,4}})?(?P<v>{_VALUE}{{4,{MAX_SECRET}}})",
        re.IGNORECASE,
        start=re.compile(
            rf"{_SECRET_KEYS}[\"']?[ \t]{{0,4}}(?:\Z|[:=][ \t]{{0,4}}[\"']?(?:\Z|{_VALUE}))" + _KEYWORD_TAIL,
            re.IGNORECASE,
        ),
        pick=_pick_secret_value,
        settled=_settled_after_value,
        value_group="v",
        anchor="[:=]",
        anchor_reach=18,
        anchor_hints=("secret", "pass", "pwd", "key", "token", "authorization"),
    ),
)

API_KEYS = (
    "openai_key", "anthropic_key", "aws_access_key", "aws_secret_key", "github_token", "slack_token", "stripe_key",
)  # fmt: skip
