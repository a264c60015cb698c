"""How far a regular expression can look, from the position where a match starts.

Streaming redaction is exact only if the decision "is there a match starting here, and
how long is it" depends on a bounded stretch of text. For a pattern whose repeats are all
bounded, the engine never reads more than `ahead` characters from the start (assertions
and boundaries included) nor more than `behind` characters before it. Patterns with an
unbounded repeat (`+`, `*`, `{n,}`) are refused: they could hold a stream back forever.
"""

from __future__ import annotations

import re
import re._constants as sc  # the stdlib's own regex parser (sre_parse), stable across 3.11-3.13
import re._parser as sp
from dataclasses import dataclass
from typing import Any

UNBOUNDED = 1 << 30


class UnboundedPattern(ValueError):
    """The pattern can read arbitrarily far; use bounded repeats such as {1,64}."""


@dataclass(frozen=True, slots=True)
class Bounds:
    ahead: int  # characters the engine may read from a match start, lookahead and boundaries included
    behind: int  # characters it may read before the start (lookbehind, \b)
    literal_prefix: str  # a literal every match starts with (case-sensitive patterns only), or ""


def _width(items: Any, groups: dict[int, int], behind: list[int]) -> int:
    """Largest number of characters a sequence can read, counting lookaheads as reads."""
    total = 0
    for op, arg in items:
        if op in (sc.LITERAL, sc.NOT_LITERAL, sc.ANY, sc.IN):
            total += 1
        elif op in (sc.MAX_REPEAT, sc.MIN_REPEAT, sc.POSSESSIVE_REPEAT):
            _, high, sub = arg
            if high == sc.MAXREPEAT:
                raise UnboundedPattern("the pattern has an unbounded repeat (+, * or {n,}); use {m,n}")
            total += high * _width(sub, groups, behind)
        elif op == sc.SUBPATTERN:
            group, _, _, sub = arg
            width = _width(sub, groups, behind)
            if group is not None:
                groups[group] = width
            total += width
        elif op == sc.ATOMIC_GROUP:
            total += _width(arg, groups, behind)
        elif op == sc.BRANCH:
            total += max(_width(branch, groups, behind) for branch in arg[1])
        elif op in (sc.ASSERT, sc.ASSERT_NOT):
            direction, sub = arg
            width = _width(sub, groups, behind)
            if direction < 0:
                behind.append(width)
            else:
                total += width  # a lookahead reads without consuming: it still extends the reach
        elif op == sc.AT:
            total += 1  # \b, $ and friends look at the next character
            behind.append(1)
        elif op == sc.GROUPREF:
            if arg not in groups:
                raise UnboundedPattern("a back-reference to a group defined later cannot be bounded")
            total += groups[arg]
        elif op == sc.GROUPREF_EXISTS:
            _, yes, no = arg
            total += max(_width(yes, groups, behind), _width(no, groups, behind) if no else 0)
        else:
            raise UnboundedPattern(f"unsupported regex construct {op}")
        if total >= UNBOUNDED:
            raise UnboundedPattern("the pattern can match more than 2**30 characters")
    return total


def _literal_prefix(items: Any, flags: int) -> str:
    if flags & re.IGNORECASE:
        return ""
    prefix: list[str] = []
    for op, arg in items:
        if op == sc.LITERAL:
            prefix.append(chr(arg))
        elif op in (sc.AT, sc.ASSERT, sc.ASSERT_NOT):
            if prefix:  # an assertion after literals ends the prefix; before them it reads nothing of the match
                break
        elif op == sc.SUBPATTERN and arg[1] == 0 and arg[2] == 0:
            inner = _literal_prefix(arg[3], flags)
            prefix.append(inner)
            if len(inner) != len(arg[3]):
                break
        else:
            break
    return "".join(prefix)


def bounds(pattern: str | re.Pattern[str], flags: int = 0) -> Bounds:
    """The reach of a pattern; raises UnboundedPattern if it has none."""
    if isinstance(pattern, re.Pattern):
        flags |= pattern.flags
        pattern = pattern.pattern
    parsed = sp.parse(pattern, flags)
    behind: list[int] = []
    ahead = _width(parsed.data, {}, behind)
    prefix = _literal_prefix(parsed.data, parsed.state.flags)
    return Bounds(ahead=ahead, behind=max(behind, default=0), literal_prefix=prefix)


def top_level_branches(source: str) -> list[str]:
    """The alternatives of a pattern's outermost `|`, as source text (one item if it has none)."""
    branches, depth, at, index, in_class = [], 0, 0, 0, False
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]" or source[index - 1] == "["  # `[]...]`: a leading `]` is a member
        elif char == "[":
            in_class = True
            if source.startswith("^]", index + 1):
                index += 2
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(source[at:index])
            at = index + 1
        index += 1
    branches.append(source[at:])
    return branches


_CLASS_RUN_TO_END = re.compile(r"(?P<cls>\[(?:\\.|[^\]\\\[])+\])\{(?P<least>\d+),(?P<most>\d+)\}\\Z")
ClassRun = tuple[re.Pattern[str], int, int]
"""`[...]{m,n}\\Z` as (`[...]{0,n}`, m, n): matched on the reversed end of a text, it gives the run's length."""


def split_end_anchored(
    pattern: re.Pattern[str],
) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None, int, tuple[ClassRun, ...]]:
    """`pattern` as (the alternatives that do not end in `\\Z`, those that do, how far from the end of the text
    the latter can start, and those that are a run of one character class to the end). The leftmost match of
    the whole is the leftmost of the parts': a partial head (`sk-`, `passw`) at the end of a text need only be
    looked for in its last characters, and a class run is found by one match on them, reversed.
    Without such alternatives, or with global inline flags, the whole is the first part."""
    source, flags = pattern.pattern, pattern.flags
    branches = top_level_branches(source)
    tails = [b for b in branches if b.endswith(r"\Z") and not b.endswith(r"\\Z")]
    if not tails or re.match(r"\(\?[aiLmsux]+\)", source):
        return pattern, None, 0, ()
    heads = [b for b in branches if b not in tails]
    runs = [found for b in tails if (found := _CLASS_RUN_TO_END.fullmatch(b)) is not None]
    others = [b for b in tails if _CLASS_RUN_TO_END.fullmatch(b) is None]
    tail = re.compile("|".join(others), flags) if others else None
    try:
        reach = 0 if tail is None else bounds(tail).ahead
    except UnboundedPattern:
        return pattern, None, 0, ()
    classes = tuple(
        (re.compile(f"{run['cls']}{{0,{run['most']}}}", flags), int(run["least"]), int(run["most"])) for run in runs
    )
    return (re.compile("|".join(heads), flags) if heads else None), tail, reach, classes


_CATEGORIES = {
    sc.CATEGORY_DIGIT: r"\d",
    sc.CATEGORY_NOT_DIGIT: r"\D",
    sc.CATEGORY_SPACE: r"\s",
    sc.CATEGORY_NOT_SPACE: r"\S",
    sc.CATEGORY_WORD: r"\w",
    sc.CATEGORY_NOT_WORD: r"\W",
}


def _class_char(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _first(items: Any, out: list[str], lookarounds: bool = False) -> bool:
    """Adds what a match of `items` can start with to `out`; False if that is not one plain character.
    `lookarounds`: assertions before the first character are passed over (a superset of the starts, not exact)."""
    if lookarounds:
        at = 0
        while at < len(items) and items[at][0] in (sc.ASSERT, sc.ASSERT_NOT):
            at += 1
        items = items[at:]
    if not items:
        return False  # an empty match
    op, av = items[0]
    if op is sc.LITERAL:
        out.append(_class_char(av))
        return True
    if op is sc.IN:
        for kind, value in av:
            if kind is sc.LITERAL:
                out.append(_class_char(value))
            elif kind is sc.RANGE:
                out.append(f"{_class_char(value[0])}-{_class_char(value[1])}")
            elif kind is sc.CATEGORY and value in _CATEGORIES:
                out.append(_CATEGORIES[value])
            else:  # a negated class, or one this does not spell back
                return False
        return True
    if op is sc.BRANCH:
        return all(_first(branch, out, lookarounds) for branch in av[1])
    if op is sc.SUBPATTERN:
        _, add_flags, del_flags, sub = av
        return not add_flags and not del_flags and _first(sub, out, lookarounds)
    if op is sc.MAX_REPEAT or op is sc.MIN_REPEAT or op is sc.POSSESSIVE_REPEAT:
        return av[0] >= 1 and _first(av[2], out, lookarounds)
    return False  # an assertion or boundary first, any character, a back reference...


def first_char_search(pattern: str) -> re.Pattern[str] | None:
    """A pattern matching exactly where `pattern` (compiled without flags) does, that the engine searches fast.

    The regex engine skips ahead quickly only to a literal or one character class: an alternation of classes
    (`[0-9][0-9]|[A-Z][A-Z]|...`) is tried at every position. So: one class of every character a match can
    start with, consumed, then the whole, looked for from its start (`(?<=(?=whole).)`). Only where a match
    starts is kept, not where it ends. None when a match could start otherwise (empty, an assertion first)."""
    parsed, first = sp.parse(pattern), []
    if parsed.state.flags & ~sc.SRE_FLAG_UNICODE or not _first(parsed, first):
        return None
    return re.compile(f"[{''.join(dict.fromkeys(first))}](?<=(?={pattern})[\\s\\S])")


def first_chars(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """One character class holding every character a non-empty match of `pattern` can start with (lookarounds
    before it passed over): where it is absent, no such match starts. None when that is not known (an empty
    match, a flag other than Unicode, a first item this does not read)."""
    parsed, first = sp.parse(pattern.pattern, pattern.flags), []
    if parsed.state.flags & ~sc.SRE_FLAG_UNICODE or not _first(parsed, first, lookarounds=True):
        return None
    return re.compile(f"[{''.join(dict.fromkeys(first))}]")
