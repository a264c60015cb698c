"""The detectors a policy names: what each one matches, and how streaming may release text around it.

A detector is a regex with bounded repeats (see regexbounds), an optional check that
confirms a candidate (Luhn, mod-97, a decodable JWT header), and what the stream redactor
needs to release text early: `run`, the characters every match is made of (a start followed
by any other character is settled), and `start`, where a match could begin given text that
may still grow (a head such as `sk-` or, at the very end of the text, part of one).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from proxy.safety.checksums import IBAN_LENGTHS, iban_valid, luhn_valid
from proxy.safety.regexbounds import bounds

Pick = Callable[[re.Match[str]], tuple[int, int] | None]
Settled = Callable[[re.Match[str], int], bool]


@dataclass(frozen=True, slots=True, eq=False)
class Detector:
    name: str  # as the policy names it; the metrics label
    label: str  # the mask token, e.g. [EMAIL]
    pattern: re.Pattern[str]
    ahead: int  # characters the regex may read from a match start
    behind: int  # characters it may read before it
    run: re.Pattern[str] | None = None  # matches a run of the characters every match is made of
    start: re.Pattern[str] | None = None  # where a match could start, when the text may still grow
    pick: Pick | None = None  # confirms a candidate: the span to redact, or None to reject it
    settled: Settled | None = None  # a match found at a start is final once the text reaches this far
    value_group: str | None = None  # only this group is replaced (assignments keep their key)
    needs: str | None = None  # a substring every match contains: a cheap way to skip text
    anchor: re.Pattern[str] | None = None  # found in every match, at most `anchor_reach` characters after its start
    anchor_reach: int = 0
    anchor_hints: tuple[str, ...] = ()  # one of these (lower case) is in every match, before its anchor

    @property
    def tag(self) -> str:
        return self.label[1:-1]


def literal_starts(literals: Iterable[str], after: str = "", ignore_case: bool = False) -> re.Pattern[str]:
    """A head from `literals` (then what `after` allows), or, at the very end of the text, part of one."""
    heads = sorted(set(literals), key=len, reverse=True)
    parts = sorted({head[:i] for head in heads for i in range(1, len(head))}, key=len, reverse=True)
    source = f"(?:{'|'.join(map(re.escape, heads))}){after}"
    if parts:
        source += f"|(?:{'|'.join(map(re.escape, parts))})\\Z"
    return re.compile(source, re.IGNORECASE if ignore_case else 0)


def make(
    name: str,
    label: str,
    source: str,
    flags: int = 0,
    run: str | None = None,
    start: re.Pattern[str] | str | None = None,
    anchor: str | None = None,
    **options: object,
) -> Detector:
    """`anchor`: a fast regex (literals, or single characters spelled out) found in every match near its start;
    the scanner searches for it and runs the detector's regex only around it."""
    pattern = re.compile(source, flags)
    reach = bounds(pattern)
    head = re.compile(start) if isinstance(start, str) else start
    if head is None and reach.literal_prefix:
        head = literal_starts([reach.literal_prefix])
    if anchor is None and reach.literal_prefix:
        anchor = re.escape(reach.literal_prefix)
    return Detector(
        name=name,
        label=label,
        pattern=pattern,
        ahead=reach.ahead,
        behind=reach.behind,
        run=re.compile(f"{run}*") if run else None,
        start=head,
        anchor=re.compile(anchor) if anchor else None,
        **options,  # type: ignore[arg-type]
    )


# ---- checks ------------------------------------------------------------------------------------------------------


def _cuts(text: str, separators: str) -> list[int]:
    """Where a run of groups could end, longest first: the whole text, then before each separator."""
    ends = (i for i in range(len(text) - 1, 0, -1) if text[i] in separators and text[i - 1] not in separators)
    return [len(text), *ends]


# File extensions that are no top-level domain: `icon@2x.png` is an asset name, not an address.
_FILE_EXTENSIONS = frozenset(
    {
        "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "pdf", "txt", "css", "js", "mjs", "json",
        "html", "htm", "yaml", "yml", "toml", "lock", "log", "csv", "tsv", "xml", "ts", "tsx", "jsx",
    }
)  # fmt: skip


def _pick_email(match: re.Match[str]) -> tuple[int, int] | None:
    return None if match.group().rsplit(".", 1)[-1].lower() in _FILE_EXTENSIONS else match.span()


# How card numbers are printed: 4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4 (or no separators at all).
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})


def _pick_card(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    for cut in _cuts(text, " -"):
        groups = tuple(map(len, re.split(r"[ -]", text[:cut])))
        digits = re.sub(r"\D", "", text[:cut])
        if len(digits) < 13:
            return None
        if len(groups) > 1 and groups not in _CARD_GROUPS:
            continue
        if len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits) and len(set(digits)) > 1:
            return match.start(), match.start() + cut
    return None


def _pick_iban(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return None
    seen = 0
    for index, char in enumerate(text):
        if char != " ":
            seen += 1
        if seen == length:
            end = index + 1
            if end < len(text) and text[end] != " ":
                return None
            return (match.start(), match.start() + end) if iban_valid(text[:end].replace(" ", "")) else None
    return None


def _pick_phone(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    if text.startswith("+"):
        for cut in _cuts(text, " .-("):
            digits = sum(c.isdigit() for c in text[:cut])
            if 8 <= digits <= 15:
                return match.start(), match.start() + cut
        return None
    digits = re.sub(r"\D", "", text)
    return (match.start(), match.end()) if digits[0] in "23456789" and digits[3] in "23456789" else None


def _pick_ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    for candidate in (text, text[:-1] if text.endswith(":") and not text.endswith("::") else None):
        if not candidate or candidate.count(":") < 2:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        groups = [g for g in re.split(r"[:.]", candidate) if g]
        if len(groups) >= 2:
            return match.start(), match.start() + len(candidate)
    return None


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


# ---- the catalogue -----------------------------------------------------------------------------------------------

_AWS_KEY_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA", "APKA", "ASCA")
_KEYWORD_TAIL = r"|[A-Za-z_-]{1,24}\Z"  # part of a keyword at the very end of the text
_SECRET_KEYS = (
    r"(?:client[_-]?secret|secret[_-]?key|secret|passphrase|password|passwd|pwd|api[_-]?key|apikey|"
    r"access[_-]?token|auth[_-]?token|refresh[_-]?token|token|private[_-]?key|authorization)"
)
_VALUE = r"""[^\s"'`,;)}\]]"""
MAX_SECRET = 4096  # an assigned value longer than this is masked up to here

BUILTIN: tuple[Detector, ...] = (
    make(
        "email",
        "[EMAIL]",
        r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])",
        run="[A-Za-z0-9._%+@-]",
        pick=_pick_email,
        needs="@",
        anchor="@",
        anchor_reach=64,
    ),
    make(
        "phone",
        "[PHONE]",
        r"(?<![\w+.-])(?:\+[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){2,6}"
        r"|(?:\([0-9]{3}\) ?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4})(?![\w+-])",
        run=r"[0-9+(). -]",
        start=r"[+(0-9]",
        pick=_pick_phone,
        anchor="[+(0-9][0-9]",
    ),
    make(
        "ssn",
        "[SSN]",
        r"(?<![\w-])(?!000|666|9[0-9][0-9])[0-9]{3}([- ])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![\w-])",
        run="[0-9 -]",
        start=r"[0-9]",
        anchor="[0-9][0-9][0-9][- ][0-9][0-9][- ]",
    ),
    make(
        "credit_card",
        "[CARD]",
        r"(?<![\w.,+-])(?<![A-Z]{2}[0-9][0-9] )(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{2,6}){2,4})(?![\w-])",
        run="[0-9 -]",
        start=r"[0-9]",
        pick=_pick_card,
        anchor="[0-9][0-9][0-9][0-9]",
    ),
    make(
        "iban",
        "[IBAN]",
        r"(?<![\w])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])",
        start=r"[A-Z]{2}[0-9]{2}|[A-Z]{2}[0-9]?\Z|[A-Z]\Z",
        pick=_pick_iban,
        anchor="[A-Z][A-Z][0-9][0-9]",
    ),
    make(
        "ipv4",
        "[IP_ADDRESS]",
        r"(?<![\w.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?!\w|\.[0-9])",
        run="[0-9.]",
        start=r"[0-9]",
        needs=".",
        anchor="[0-9][.][0-9]",
        anchor_reach=2,
    ),
    make(
        "ipv6",
        "[IP_ADDRESS]",
        r"(?<![\w:.])[0-9A-Fa-f:]{2,39}(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![\w:]|\.[0-9])",
        run="[0-9A-Fa-f:.]",
        pick=_pick_ipv6,
        needs=":",
        anchor=":[0-9A-Fa-f:]",  # the first colon of an address is followed by a hex digit or another colon
        anchor_reach=4,
    ),
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

BY_NAME: dict[str, Detector] = {d.name: d for d in BUILTIN}

API_KEYS = (
    "openai_key", "anthropic_key", "aws_access_key", "aws_secret_key", "github_token", "slack_token", "stripe_key",
)  # fmt: skip
GROUPS: dict[str, tuple[str, ...]] = {
    "api_key": API_KEYS,
    "ip_address": ("ipv4", "ipv6"),
    "secrets": (*API_KEYS, "jwt", "private_key", "password"),
    "pii": ("email", "phone", "ssn", "credit_card", "iban"),
    "all": tuple(BY_NAME),
}
KNOWN_NAMES = frozenset(BY_NAME) | frozenset(GROUPS)

MAX_CUSTOM_REACH = 512


def expand(names: Iterable[str]) -> list[str]:
    """Detector names with groups expanded, in first-mention order, without repeats."""
    out: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            if member not in out:
                out.append(member)
    return out


def custom_detector(name: str, pattern: str, label: str | None = None, ignore_case: bool = False) -> Detector:
    """A policy's own regex; its reach must be bounded (checked when the policy loads)."""
    flags = re.IGNORECASE if ignore_case else 0
    detector = make(name, f"[{label or name.upper()}]", pattern, flags)
    if detector.ahead > MAX_CUSTOM_REACH:
        raise ValueError(f"the pattern can match up to {detector.ahead} characters; the limit is {MAX_CUSTOM_REACH}")
    return detector
