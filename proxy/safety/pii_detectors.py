"""Built-in detectors of personal data: email, phone, SSN, card numbers, IBANs, IP addresses."""

from __future__ import annotations

import ipaddress
import re

from proxy.safety import confidence
from proxy.safety.checksums import IBAN_LENGTHS, iban_valid, luhn_valid
from proxy.safety.detector import Detector, make


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
    if len(set(re.sub(r"[0-9]", "", text))) > 1:  # one kind of separator: 4111 1111-1111 1111 is no card
        return None
    for cut in _cuts(text, " -."):
        groups = tuple(map(len, re.split(r"[ .-]", text[:cut])))
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


PII_DETECTORS: tuple[Detector, ...] = (
    make(
        "email",
        "[EMAIL]",
        r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])",
        run="[A-Za-z0-9._%+@-]",
        pick=_pick_email,
        score=confidence.email,
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
        score=confidence.phone,
        context=confidence.CONTEXT,
    ),
    make(
        "ssn",
        "[SSN]",
        r"(?<![\w-])(?!000|666|9[0-9][0-9])[0-9]{3}(?:-(?!00)[0-9]{2}-| (?!00)[0-9]{2} |(?!00)[0-9]{2})"
        r"(?!0000)[0-9]{4}(?![\w-])",
        run="[0-9 -]",
        start=r"[0-9]",
        anchor="[0-9][0-9][0-9][- 0-9][0-9][0-9]",
        score=confidence.ssn,
        context=confidence.CONTEXT,
    ),
    make(
        "credit_card",
        "[CARD]",
        r"(?<![\w.,+-])(?<![A-Z]{2}[0-9][0-9] )(?:[0-9]{13,19}|[0-9]{4}(?:[ .-][0-9]{2,6}){2,4})(?![\w-]|\.[0-9])",
        run="[0-9 .-]",
        start=r"[0-9]",
        pick=_pick_card,
        score=confidence.credit_card,
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
        score=confidence.ipv4,
        context=confidence.CONTEXT,
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
        score=confidence.ipv6,
    ),
)
