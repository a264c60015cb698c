"""Built-in detectors of secrets: provider API keys, tokens, JWTs, private keys and assigned passwords."""

from __future__ import annotations

import base64
import binascii
import re

import orjson

from proxy.safety.detector import Detector, literal_starts, make
from proxy.safety.secret_values import chosen, random_looking, strong


def _pick_jwt(match: re.Match[str]) -> tuple[int, int] | None:
    head = match.group().split(".", 1)[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return None
    return match.span() if isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded) else None


_MASKED_RUN = re.compile(r"([xX*•.])\1{5,}")


def _pick_unmasked(match: re.Match[str]) -> tuple[int, int] | None:
    """`AKIAXXXXXXXXXXXXXXXX`, `ghp_xxxx...`: a prefix followed by a mask is an example, not a token."""
    return None if _MASKED_RUN.search(match.group()) else match.span()


def _pick_mixed(match: re.Match[str]) -> tuple[int, int] | None:
    """Random tokens mix letters and digits; `sk-this-is-not-a-key-example` does not."""
    text = match.group()
    if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return None
    return _pick_unmasked(match)


def _pick_secret_value(match: re.Match[str]) -> tuple[int, int] | None:
    """A value that looks chosen; after a bare space or `is` (prose), one that also looks random."""
    value = match.group("v")
    if match.group("eq") is not None:
        return match.span() if chosen(value) else None
    return match.span() if random_looking(value) else None


def _pick_inline(match: re.Match[str]) -> tuple[int, int] | None:
    """URL credentials, `curl -u` and auth tuples need a chosen value; a bare `-a X`/`-pX` a strong one."""
    name, value = next((k, v) for k, v in match.groupdict().items() if v is not None)
    return match.span() if (strong if name == "a" else chosen)(value) else None


def _pick_pem(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span() if re.search(r"[A-Za-z0-9+/=]{40}", match.group("body").replace("\\n", "")) else None


def _settled_after_value(match: re.Match[str], length: int) -> bool:
    """The value ended on a character the text already has: nothing later changes this match."""
    return match.end() < length


def _settled_after_run(match: re.Match[str], length: int) -> bool:
    """The value (which may leave out a final `.`) is followed by a character no value contains."""
    return _VALUE_RUN.match(match.string, match.end()).end() < length  # type: ignore[union-attr]


def _settled_pem(match: re.Match[str], length: int) -> bool:
    return match.group("end") is not None or match.end() + 256 <= length


_AWS_KEY_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA", "APKA", "ASCA")
_KEYWORD_TAIL = r"|[A-Za-z_-]{1,24}\Z"  # part of a keyword at the very end of the text


def _phrase_tails(*phrases: str) -> str:
    """Alternatives matching a multi-word key cut after one of its spaces, at the very end of the text."""
    cuts = {p[:i] for p in phrases for i in range(p.index(" ") + 1, len(p))}
    return "|" + "|".join(re.escape(c) for c in sorted(cuts, key=len, reverse=True)) + r"\Z"


_AWS_SECRET_KEY = r"(?:aws_?)?secret[ _]?(?:access[ _]?)?key"
_AWS_KEY_SPELLINGS = tuple(
    f"{aws}secret{sep}{access}key"
    for aws in ("", "aws", "aws_")
    for sep in (" ", "_", "")
    for access in ("", "access ", "access_", "access")
)  # every key _AWS_SECRET_KEY matches, up to case
_AWS_TAILS = _phrase_tails(*(key for key in _AWS_KEY_SPELLINGS if " " in key))  # each cut after a space: a head
# client_secret, secret_key, secret, passphrase, password, passwd, pass, pwd, private_key, api_key, apikey,
# access_token, auth_token, authorization, refresh_token, token: grouped by first letter (after a check of it),
# so the engine tries one group per position, not every key; the order within a letter is the order of choice.
_SECRET_KEYS = (
    r"(?=[cspart])(?:client[_-]?secret|secret(?:[_-]?key)?|p(?:ass(?:phrase|word|wd)?|wd|rivate[_-]?key)"
    r"|a(?:pi[_-]?key|pikey|ccess[_-]?token|uth[_-]?token|uthorization)|refresh[_-]?token|token)"
)
_ENV_PREFIX = r"(?-i:[A-Z][A-Z0-9]{0,15})?"  # PGPASSWORD, MYSQLPWD: a capitalised variable ending in a key
_ENV_KEYWORD_TAIL = r"|[A-Za-z0-9_-]{1,28}\Z"  # part of one at the very end: digits too (PG2), 16 + 13 - 1 long
_VALUE = r"""[^\s"'`,;)}\]]"""
_VALUE_RUN = re.compile(f"{_VALUE}*")
_IS = r"(?:[ \t]{1,4}(?:is|was)[ \t]{1,4}[\"'`]?|[ \t]{1,4}`)"  # prose: `password is X`, password `X`
# Where `=`, `:`, a backtick, or the `s` of ` is `/` was ` (either case) ends the key: a fast anchor for both.
_SEPARATOR_ANCHOR = r"[:=`sS](?:(?<=[:=`])|(?<=[ \t][iI][sS])(?=[ \t])|(?<=[ \t][wW][aA][sS])(?=[ \t]))"
_ESCAPED_NL = r"(?:\s|\\[rn])"  # a line break, or one written as \n inside a JSON, YAML or .env string
_KEY_HINTS = ("secret", "pass", "pwd", "key", "token", "authorization")  # one is in every key of _SECRET_KEYS
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
        pick=_pick_unmasked,
        anchor="|".join(_AWS_KEY_PREFIXES),
    ),
    make(
        "aws_secret_key",
        "[AWS_SECRET_KEY]",
        rf"(?<![A-Za-z0-9]){_AWS_SECRET_KEY}[\"']?(?:[ \t]{{0,4}}[:=][ \t]{{0,4}}[\"']?|{_IS})"
        r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        re.IGNORECASE,
        start=re.compile(
            rf"{_AWS_SECRET_KEY}[\"']?[ \t]{{0,4}}(?:\Z|[:=`]|i\Z|is(?:[ \t]|\Z)|wa?\Z|was(?:[ \t]|\Z))"
            + _AWS_TAILS
            + _KEYWORD_TAIL,
            re.IGNORECASE,
        ),
        settled=_settled_after_value,
        value_group="v",
        anchor=_SEPARATOR_ANCHOR,
        anchor_reach=30,
        anchor_hints=("secret",),
        start_hints=("secret",),
    ),
    make(
        "github_token",
        "[GITHUB_TOKEN]",
        r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,247})(?![\w])",
        run="[A-Za-z0-9_]",
        start=literal_starts(["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]),
        pick=_pick_unmasked,
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
        rf"(?:{_ESCAPED_NL}{{1,8}}[A-Za-z][A-Za-z-]{{0,31}}: [^\r\n\\]{{0,128}}){{0,4}}"  # Proc-Type, DEK-Info
        rf"(?P<body>(?:[A-Za-z0-9+/=\s]|\\[rn]){{0,16384}})"
        rf"(?P<end>{_ESCAPED_NL}{{0,8}}-----END (?P=kind)PRIVATE KEY-----)?",
        pick=_pick_pem,
        settled=_settled_pem,
    ),
    make(
        "password",
        "[SECRET]",
        rf"(?<![A-Za-z0-9]){_ENV_PREFIX}{_SECRET_KEYS}[\"']?(?:[ \t]{{0,4}}(?P<eq>[:=])[ \t]{{0,4}}[\"'`]?|{_IS})"
        rf"(?:(?:bearer|basic|token)[ \t]{{1,4}})?(?!(?:bearer|basic|token)[ \t])"  # the scheme is never the value
        rf"(?P<v>{_VALUE}{{4,{MAX_SECRET}}}(?<!\.))",
        re.IGNORECASE,
        start=re.compile(
            rf"{_ENV_PREFIX}{_SECRET_KEYS}[\"']?[ \t]{{0,4}}(?:\Z|[:=`]|i\Z|is(?:[ \t]|\Z)|wa?\Z|was(?:[ \t]|\Z))"
            + _ENV_KEYWORD_TAIL,
            re.IGNORECASE,
        ),
        pick=_pick_secret_value,
        settled=_settled_after_run,
        value_group="v",
        anchor=_SEPARATOR_ANCHOR,
        anchor_reach=38,
        anchor_hints=_KEY_HINTS,
        start_hints=_KEY_HINTS,
    ),
    make(
        "url_password",
        "[SECRET]",
        r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s:/@\"'`<>]{0,64}:(?P<u>[^\s:/@\"'`]{3,128})@",
        run=r"\S",
        start=r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]{1,15}:(?://|/?\Z)|(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]{0,15}\Z",
        pick=_pick_inline,
        value_group="u",
        anchor="://",
        anchor_reach=16,
    ),
    make(
        "cli_password",
        "[SECRET]",
        r"(?<![\w-])(?:-u[ \t]{1,4}[^\s:\"'`$]{1,64}:(?P<c>[^\s\"'`@]{3,128})"  # curl -u user:pass
        r"|(?:-a|-p|--password|--pass)(?:[ \t]{1,4}|=|(?<=-p))(?P<a>[^\s\"'`]{3,128})"  # redis-cli -a, mysql -pX
        r")(?![^\s\"'`])"
        r"|(?<![\w])auth[ \t]{0,2}=[ \t]{0,2}\([ \t]{0,2}[\"'][^\"'\n]{1,64}[\"'][ \t]{0,2},[ \t]{0,2}[\"']"
        r"(?P<t>[^\"'\n]{1,128})[\"']",  # auth=("user", "pass")
        start=r"(?<![\w-])-(?:[uap](?:\S|[ \t]|\Z)|-pass|-(?:p|pa|pas)?\Z|\Z)"
        r"|(?<!\w)auth[ \t]{0,2}(?:=|\Z)|(?<!\w)a(?:u(?:th?)?)?\Z",
        pick=_pick_inline,
        settled=_settled_after_value,
        value_group=("c", "a", "t"),  # the first that took part
        anchor="-[uap]|auth",
    ),
)

PASSWORDS = ("password", "url_password", "cli_password")
API_KEYS = (
    "openai_key", "anthropic_key", "aws_access_key", "aws_secret_key", "github_token", "slack_token", "stripe_key",
)  # fmt: skip
