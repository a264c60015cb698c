"""Text as the detectors see it: look-alike characters folded, invisible ones dropped, odd separators made plain.

`jane\\u200b@corp.io`, `jane\\uff20corp.io` and `4111\\u00a01111...` hide a value from a regex
written for ASCII. Each character is mapped on its own, to one character or to none, so a
prefix of a text normalises to a prefix of its normal form (what streaming needs), and
every normalised character knows the original one it came from: hits are found on the
normal form and the original span is what gets replaced.

The mapping: characters whose NFKC form is one printable ASCII character (fullwidth forms,
mathematical letters and digits; not superscripts or subscripts); Unicode spaces (no-break,
thin, narrow, ideographic) become a space; hyphens, non-breaking hyphen and minus become
`-`; soft hyphen, zero-width characters, word joiners, the BOM and bidi controls are removed.
"""

from __future__ import annotations

import re
import unicodedata

_REMOVED = (
    "\u00ad\u034f\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
_DASHES = "\u2010\u2011\u2012\u2212\ufe63"


def _table() -> dict[int, str]:
    table: dict[int, str] = {}
    ranges = (range(0xA0, 0x3100), range(0xFE50, 0xFF70), range(0x1D400, 0x1D800))
    for code in (c for r in ranges for c in r):
        char = chr(code)
        if unicodedata.category(char) == "Zs":
            table[code] = " "
            continue
        decomposition = unicodedata.decomposition(char)
        if not decomposition.startswith(("<wide>", "<font>", "<narrow>", "<small>")):
            continue
        folded = unicodedata.normalize("NFKC", char)
        if len(folded) == 1 and folded.isascii() and folded.isprintable():
            table[code] = folded
    for char in _DASHES:
        table[ord(char)] = "-"
    for char in _REMOVED:
        table[ord(char)] = ""
    return table


TABLE = _table()
_KEYS = frozenset(map(chr, TABLE))


def _class(codes: list[int]) -> str:
    """A character class of runs (`a-z`), which the regex engine tests far faster than one of single characters."""
    runs: list[tuple[int, int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    parts = (re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in runs)
    return "[" + "".join(parts) + "]"


_SPECIAL = re.compile(_class(sorted(TABLE)))


def normalise(text: str) -> tuple[str, list[int] | None]:
    """The normal form, and for each of its characters the index of the original one; None when unchanged."""
    if text.isascii() or _KEYS.isdisjoint(text):
        return text, None
    out: list[str] = []
    where: list[int] = []
    last = 0
    for found in _SPECIAL.finditer(text):
        at = found.start()
        out.append(text[last:at])
        where.extend(range(last, at))
        mapped = TABLE[ord(text[at])]
        if mapped:
            out.append(mapped)
            where.append(at)
        last = at + 1
    out.append(text[last:])
    where.extend(range(last, len(text)))
    return "".join(out), where
