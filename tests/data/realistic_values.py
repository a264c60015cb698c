"""Generated values for the realistic redaction corpus: addresses, numbers with valid checksums, tokens, passwords.

Drawn from one seeded generator, so the corpus is the same on every run and no credential
literal sits in the repository.
"""

from __future__ import annotations

import base64
import json
import random
import string

rng = random.Random(16)
ALNUM = string.ascii_letters + string.digits


def token(n: int, alphabet: str = ALNUM) -> str:
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            v = int(ch) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return digits
    raise AssertionError


def iban(country: str, bban_len: int) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(bban_len))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def spaced(value: str, sep: str = " ") -> str:
    return sep.join(value[i : i + 4] for i in range(0, len(value), 4))


def grouped_card(digits: str, sep: str) -> str:
    if len(digits) == 15:
        return sep.join((digits[:4], digits[4:10], digits[10:]))
    return spaced(digits, sep)


# ---- values ------------------------------------------------------------------------------------------------------

FIRST = ["maria", "li.wei", "j.okafor", "anna-lena", "raj.patel", "sofia_m", "tom.becker", "nadia", "k.tanaka", "olu"]
DOMAINS = ["acmecorp.io", "northwind.de", "mail.globex.com", "uni-hamburg.de", "fastmail.fm", "initech.co.uk"]


def emails(n: int) -> list[str]:
    return [f"{rng.choice(FIRST)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}" for _ in range(n)]


def phones(n: int) -> list[str]:
    out = []
    for i in range(n):
        area, exch, line = rng.randint(201, 989), rng.randint(200, 989), rng.randint(1000, 9999)
        shape = i % 5
        out.append(
            [
                f"+1 {area} {exch} {line}",
                f"({area}) {exch}-{line}",
                f"{area}-{exch}-{line}",
                f"+44 20 {rng.randint(7000, 8999)} {line}",
                f"+49 30 {rng.randint(100000, 999999)}",
            ][shape]
        )
    return out


def ssns(n: int) -> list[str]:
    out = []
    while len(out) < n:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        out.append(f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}")
    return out


def cards(n: int) -> list[str]:
    prefixes = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16), ("34", 15)]
    out = []
    for i in range(n):
        prefix, length = prefixes[i % len(prefixes)]
        out.append(luhn_complete(prefix, length))
    return out


def ibans(n: int) -> list[str]:
    shapes = [("DE", 18), ("FR", 23), ("NL", 14), ("ES", 20), ("IT", 23), ("CH", 17)]
    out = []
    for i in range(n):
        country, length = shapes[i % len(shapes)]
        if country == "NL":
            bban = "ABNA" + "".join(rng.choice(string.digits) for _ in range(10))
            numeric = "".join(str(int(c, 36)) for c in bban + "NL00")
            out.append(f"NL{98 - int(numeric) % 97:02d}{bban}")
        elif country == "IT":
            bban = "X" + "".join(rng.choice(string.digits) for _ in range(22))
            numeric = "".join(str(int(c, 36)) for c in bban + "IT00")
            out.append(f"IT{98 - int(numeric) % 97:02d}{bban}")
        else:
            out.append(iban(country, length))
    return out


def ipv4s(n: int) -> list[str]:
    out = []
    for i in range(n):
        shape = i % 4
        if shape == 0:
            out.append(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        elif shape == 1:
            out.append(f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        elif shape == 2:
            out.append(f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        else:
            first = rng.choice([34, 52, 81, 95, 145, 185])
            out.append(f"{first}.{rng.randint(1, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    return out


def ipv6s(n: int) -> list[str]:
    out = []
    for i in range(n):
        groups = [f"{rng.randint(1, 0xFFFF):x}" for _ in range(4)]
        out.append(
            [
                f"2a00:1450:{groups[0]}:{groups[1]}::{groups[2]}",
                f"fe80::{groups[0]}:{groups[1]}:{groups[2]}:{groups[3]}",
                f"2606:4700:{groups[0]}::{groups[1]}",
            ][i % 3]
        )
    return out


def openai_keys(n: int) -> list[str]:
    return ["sk-" + ("proj-" if i % 2 else "") + token(48, ALNUM + "_-") for i in range(n)]


def anthropic_keys(n: int) -> list[str]:
    return ["sk-" + "ant-api03-" + token(80, ALNUM + "_-") + "AA" for _ in range(n)]


def aws_ids(n: int) -> list[str]:
    return [rng.choice(["AKIA", "ASIA"]) + token(16, string.ascii_uppercase + "234567") for _ in range(n)]


def aws_secrets(n: int) -> list[str]:
    return [token(40, ALNUM + "/+") for _ in range(n)]


def github_tokens(n: int) -> list[str]:
    return ["gh" + rng.choice("pousr") + "_" + token(36) for _ in range(n)]


def slack_tokens(n: int) -> list[str]:
    return [
        "xox" + rng.choice("bp") + f"-{rng.randint(10**11, 10**12 - 1)}-{rng.randint(10**12, 10**13 - 1)}-{token(24)}"
        for _ in range(n)
    ]


def stripe_keys(n: int) -> list[str]:
    return [rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + token(32) for _ in range(n)]


def jwts(n: int) -> list[str]:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    out = []
    for _ in range(n):
        head = b64(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
        body = b64(json.dumps({"sub": token(10), "exp": rng.randint(1700000000, 1900000000)}).encode())
        out.append(f"{head}.{body}.{b64(rng.randbytes(32))}")
    return out


def passwords(n: int) -> list[str]:
    out = []
    for _ in range(n):
        out.append(token(rng.randint(10, 16), ALNUM) + rng.choice(["!", "#", "%", "_", "9", ""]))
    return out
