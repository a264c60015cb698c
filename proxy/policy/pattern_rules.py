"""Blocked-input patterns that run in linear time on Python's backtracking engine, or are refused.

Python's `re` can take exponential time on a nested repeat (`(\\w+\\s?)+$`: 649 ms on 23
characters, doubling per character) and quadratic time on an unbounded repeat that must
be followed by something (`.*foo` on 100,000 characters: seconds), on the event loop,
with caller text as input. A linear-time engine (RE2) would change what `\\w` and other
classes mean, so patterns keep Python's semantics and are checked when the policy loads:

1. every repeat is bounded (`{m,n}` or `?`, not `+`, `*`, `{m,}`), and a match reads at
   most `MAX_REACH` characters from where it starts, so each starting position costs a
   bounded amount;
2. no repeat of more than one iteration holds a variable-width repeat or an alternation,
   unless inside an atomic group `(?>...)` or under a possessive quantifier, since those
   are what make the number of ways to match explode.

Together: the time for one text is linear in its length, with a constant set by the pattern.
"""

from __future__ import annotations

import re
import re._constants as sc  # the stdlib's own regex parser (sre_parse), stable across 3.11-3.13
import re._parser as sp
from typing import Any

from proxy.safety.regexbounds import UnboundedPattern, bounds

MAX_REACH = 10_000


def backtracking_problem(pattern: str, flags: int = 0) -> str | None:
    """Why `pattern` could take more than linear time, in words for the policy author, or None."""
    try:
        reach = bounds(pattern, flags).ahead
    except UnboundedPattern as exc:
        return str(exc).removeprefix("the pattern ")
    if reach > MAX_REACH:
        return f"can read {reach} characters from one position; at most {MAX_REACH} are allowed"
    return _nested(sp.parse(pattern, flags).data, inside=False)


def _nested(items: Any, inside: bool) -> str | None:
    """`inside`: within a repeat of more than one iteration that may backtrack."""
    for op, arg in items:
        found = None
        if op in (sc.MAX_REPEAT, sc.MIN_REPEAT):
            low, high, sub = arg
            if inside and high > 1 and low != high:
                return "repeats a variable-width repeat; use an atomic group (?>...) or fixed counts"
            found = _nested(sub, inside or high > 1)
        elif op == sc.BRANCH:
            if inside:
                return "repeats an alternation; use an atomic group (?>a|b) inside the repeat"
            found = next((p for branch in arg[1] if (p := _nested(branch, inside))), None)
        elif op == sc.SUBPATTERN:
            found = _nested(arg[3], inside)
        elif op in (sc.ASSERT, sc.ASSERT_NOT):
            found = _nested(arg[1], inside)
        elif op == sc.GROUPREF_EXISTS:
            found = _nested(arg[1], inside) or (_nested(arg[2], inside) if arg[2] else None)
        # ATOMIC_GROUP and POSSESSIVE_REPEAT never give back what they matched: nothing inside backtracks.
        if found:
            return found
    return None


def check_patterns(patterns: list[tuple[str, re.Pattern[str]]]) -> None:
    """Raises ValueError naming the first pattern that could backtrack past linear time."""
    for name, compiled in patterns:
        problem = backtracking_problem(compiled.pattern, compiled.flags)
        if problem is not None:
            raise ValueError(f"stages.input.blocked_patterns: pattern '{name}' {problem}")
