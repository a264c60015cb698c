"""How sure a shape-and-checksum hit is, from the value and the words just before it.

Keywords before a value (`ssn`, `ip`, `host`) raise confidence; what identifies no one lowers
it: loopback, unspecified and documentation addresses, version and section numbers, reserved
example domains and `name@domain.tld` templates, `git@host:` remotes, part and order numbers,
published test card numbers. A score reads at most its detector's `context` characters before
the hit (streams keep them) and nothing after it beyond the character that ended the match.
The policy's per-kind threshold decides (default 0.5; see docs/redaction.md).
"""

from __future__ import annotations

import ipaddress
import re

CONTEXT = 32  # characters before a hit that a score reads


def _before(match: re.Match[str], start: int) -> str:
    return match.string[max(0, start - CONTEXT) : start].lower()


# ---- IP addresses

_VERSION_WORDS = re.compile(
    r"(?:version|ver\.?|release|build|kernel|firmware|section|clause|table|chapter|figure|oid|snmp|node|openssl"
    r"|python|v|§)[\s:=\"'/-]*\Z"
)
_IP_WORDS = re.compile(r"\b(?:ip|ips|ipv4|host|addr|address|server|peer|client|remote|from|ssh|ping|dns|gateway)\b")


def ipv4(match: re.Match[str], start: int, end: int) -> float:
    text = match.string[start:end]
    address = ipaddress.IPv4Address(text)
    if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_reserved:
        return 0.1
    if _documentation(address) or text.startswith("255."):
        return 0.1
    before = _before(match, start)
    if _VERSION_WORDS.search(before):
        return 0.2
    octets = [int(o) for o in text.split(".")]
    if octets[3] == 0 or (octets[0] < 10 and max(octets[1:]) <= 20):  # a network, or a version such as 2.4.1.0
        return 0.9 if _IP_WORDS.search(before) else 0.3
    return 0.9


_DOC_V4 = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_DOC_V6 = ipaddress.ip_network("2001:db8::/32")


def _documentation(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        return address in _DOC_V6
    return any(address in net for net in _DOC_V4)


def ipv6(match: re.Match[str], start: int, end: int) -> float:
    address = ipaddress.IPv6Address(match.string[start:end])
    if address.is_loopback or address.is_unspecified or _documentation(address):
        return 0.1
    return 0.9


# ---- e-mail

_RESERVED_DOMAIN = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid|localhost|local|tld|domain\.com|company\.com"
    r"|yourcompany\.com|your-company\.com|yourdomain\.com|email\.com|mail\.com|test\.com|acme\.com)$"
)
_PLACEHOLDER_LOCAL = re.compile(
    r"^(?:name|user|username|you|your[._-]?\w*|someone|somebody|firstname[._-]?lastname|first[._-]?last|email"
    r"|foo|bar|test|noreply|no-reply|me)$"
)


def email(match: re.Match[str], start: int, end: int) -> float:
    text = match.string[start:end]
    local, _, domain = text.lower().rpartition("@")
    if local == "git" or match.string[end : end + 1] == ":":  # git@github.com:org/repo.git, user@host:path
        return 0.0
    if _RESERVED_DOMAIN.search(domain):
        return 0.2
    if _PLACEHOLDER_LOCAL.match(local):
        return 0.3
    return 0.9


# ---- numbers

_NUMBER_WORDS = re.compile(
    r"(?:part|p/n|pn|order|sku|invoice|ticket|ref|reference|serial|model|tracking|item|case|no\.|#|id)[\s:.#-]*\Z"
)
_PHONE_WORDS = re.compile(r"\b(?:phone|call|tel|mobile|cell|fax|sms|whatsapp|contact)\b")


def phone(match: re.Match[str], start: int, end: int) -> float:
    before = _before(match, start)
    if _NUMBER_WORDS.search(before) and not _PHONE_WORDS.search(before):
        return 0.2
    return 0.9


_SSN_WORDS = re.compile(r"(?:\bssn|social[ _-]?security|\bss#|\bsocial\b|\bsin\b|\btin\b)")


def ssn(match: re.Match[str], start: int, end: int) -> float:
    """Nine bare digits are an SSN only where the words before say so; grouped ones are unless they say otherwise."""
    before = _before(match, start)
    if "-" not in match.string[start:end] and " " not in match.string[start:end]:
        return 0.9 if _SSN_WORDS.search(before) else 0.1
    if _NUMBER_WORDS.search(before) and not _SSN_WORDS.search(before):
        return 0.2
    return 0.9


# Published test numbers of card networks and payment providers: in docs they are examples.
TEST_CARDS = frozenset(
    {
        "4111111111111111", "4242424242424242", "4012888888881881", "4000056655665556", "4000000000000002",
        "4000000000000077", "4000000000009995", "5555555555554444", "5105105105105100", "5200828282828210",
        "2223003122003222", "378282246310005", "371449635398431", "6011111111111117", "6011000990139424",
        "3056930009020004", "36227206271667", "3566002020360505", "6200000000000005", "4222222222222",
    }
)  # fmt: skip


def credit_card(match: re.Match[str], start: int, end: int) -> float:
    digits = re.sub(r"\D", "", match.string[start:end])
    return 0.6 if digits in TEST_CARDS else 0.9
