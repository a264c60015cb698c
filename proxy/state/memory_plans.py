"""The memory store's plans written out as straight-line code, and the leases of its concurrency slots.

A plan's rows are fixed once it is built (per caller and route), yet the store's generic loop over
them (`MemoryStore._admit_rows`, `_apply`) tests each row's kind, unpacks it, and calls into the
arithmetic and the rounding for each: most of an admission's cost. So for each shape of plan (its rows'
kinds, and its quotas' strictness) this module writes that loop out as one function, with the
arithmetic of `arith.py` and `proxy.rounding.round_to` inlined, compiled once per shape; a plan binds
its keys and limits to it once (`admission`, `settlement`).

Only the usual case is written out. An admission function answers None when a row refuses, or when the
store might have to sweep (near `max_keys`), before it has written anything; the store then runs its
generic loop, which reads the same state and is the reference: tests hold the two to the same figures
and the same state afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from proxy import rounding
from proxy.state.arith import EPS, UNIT_EPS
from proxy.state.base import QUOTA, RATE, SLOT, Plan

# An admission written out: (data, amounts, now, max_keys) -> figures, or None (see the module's docstring).
Admit = Callable[[dict[str, tuple[Any, float]], Sequence[Any], float, int], list[float] | None]
# A settlement written out: the same arguments -> results, or None when the store might have to sweep.
Settle = Admit


class _Leases(dict[str, float]):
    """A concurrency slot's leases and their deadlines, with bounds on those deadlines, so that admitting and
    releasing cost the same with 10 or 10,000 requests in flight: the leases are only looked through when the
    earliest deadline may have passed (a lease whose release never came)."""

    __slots__ = ("latest", "soonest")

    def __init__(self) -> None:  # empty, as dict.__new__ made it: no dict.__init__ to call
        self.soonest = math.inf  # at most the earliest deadline
        self.latest = -math.inf  # at least the latest: when the whole entry can go

    def expire(self, now: float) -> None:
        if self.soonest > now:
            return
        for lease in [lease for lease, deadline in self.items() if deadline <= now]:
            del self[lease]
        self.soonest = min(self.values(), default=math.inf)
        self.latest = max(self.values(), default=-math.inf)

    def put(self, lease: str, deadline: float) -> None:
        deadline = self[lease] = rounding.round_to(deadline, 6)  # to the microsecond, as the Redis store keeps it
        if deadline < self.soonest:  # min() and max(), without their calls
            self.soonest = deadline
        if deadline > self.latest:
            self.latest = deadline


def _gone(data: dict[str, tuple[Any, float]], key: str) -> None:
    """Deletes an expired entry; it reads as no value."""
    del data[key]


# What the written-out code refers to besides its plan's constants (numbers go in as literals: `repr` of a finite
# float reads back as the same float).
_NAMESPACE: dict[str, Any] = {"Leases": _Leases, "gone": _gone, "floor": math.floor}
_EPS, _UNIT_EPS = repr(EPS), repr(UNIT_EPS)
_FAST_BELOW, _TO_INTEGER, _MARGIN = repr(rounding._FAST_BELOW), repr(rounding._TO_INTEGER), repr(rounding._MARGIN)


def _read(i: int, written: bool) -> list[str]:
    """Row i's live value as `h{i}`, read as the generic loop reads it: an expired entry goes. Unless `written`: the
    key is popped before it is put back, with nothing read or written in between (and an admission's refusal leaves
    it to the generic loop), so an expired entry going first would change nothing."""
    if written:
        return [f"e = data.get(K{i})", f"h{i} = e[0] if e is not None and e[1] > now else None"]
    return [f"e = data.get(K{i})", f"h{i} = None if e is None else e[0] if e[1] > now else gone(data, K{i})"]


def _rounded(target: str, value: str) -> list[str]:
    """`target = round_to(value, 6)` inlined (see proxy/rounding.py), and exact where `round_to` calls `round`
    for a positive value scaled below 2**51 (a quarter of all values): within 1/8 of a half. There the exact
    product `value` x 10**6 is `y` plus the error `e`, found exactly (Dekker's product: `value` split in halves
    of 26 bits, each times 10**6, whose 14 bits make every product exact), and `y - w` and a half less it are
    exact too (Sterbenz), so comparing `e` with the latter says on which side of the half the exact value is."""
    return [
        f"y = ({value}) * 1e6",
        f"w = (y + {_TO_INTEGER}) - {_TO_INTEGER}",
        f"if 0.0 < y < {_FAST_BELOW}:",
        "    d = y - w",
        f"    if -{_MARGIN} < d < {_MARGIN}:",
        f"        {target} = w / 1e6",
        "    else:",
        f"        c = ({value}) * 134217729.0",
        f"        h = c - (c - ({value}))",
        f"        e = (h * 1e6 - y) + (({value}) - h) * 1e6",
        "        if d > 0.0:  # between w and w + 1",
        "            k = 0.5 - d",
        f"            {target} = (w + 1.0 if e > k else w if e < k else w + 1.0 if w % 2.0 else w) / 1e6",
        "        else:  # between w - 1 and w",
        "            k = -0.5 - d",
        f"            {target} = (w - 1.0 if e < k else w if e > k else w - 1.0 if w % 2.0 else w) / 1e6",
        "else:",
        f"    {target} = round({value}, 6)",
    ]


def _remaining(target: str, tat: str, i: int) -> list[str]:
    """`target = arith._remaining(tat, now, W{i}, I{i})`, inlined."""
    return [f"x = (now + W{i} - {tat}) / I{i} + {_UNIT_EPS}", f"{target} = float(floor(x)) if x >= 1.0 else 0.0"]


def _admit_source(shape: tuple[tuple[str, bool], ...]) -> str:
    """`MemoryStore._admit_rows` for plans of this shape: reads, checks (None at the first refusal), then the
    writes in row order, each a pop and a re-insert (the dict's order is the order of last write)."""
    names: list[str] = []
    body = [f"if len(data) + {len(shape)} > max_keys:", "    return None"]
    body.append(f"{''.join(f'a{i}, ' for i in range(len(shape)))}= amounts")
    checks: list[str] = []
    writes: list[str] = []
    figures: list[str] = []
    for i, (kind, strict) in enumerate(shape):
        body += _read(i, True)
        if kind == RATE:  # arith.rate_check
            names += [f"K{i}", f"W{i}", f"I{i}"]
            checks += [
                f"b = now if h{i} is None or h{i} < now else h{i}",
                f"t{i} = b + a{i} * I{i}",
                f"if t{i} - W{i} > now + {_EPS}:",
                "    return None",
            ]
            writes += _remaining(f"r{i}", f"t{i}", i)
            writes += _rounded("v", f"t{i}")
            writes += [f"data.pop(K{i}, None)", f"if not t{i} <= now:", f"    data[K{i}] = (v, t{i})"]
            figures.append(f"True, r{i}, t{i} - now, 0.0")
        elif kind == SLOT:  # arith.slot_check, then _Leases.put
            names += [f"K{i}", f"L{i}", f"W{i}"]
            checks += [
                f"s{i} = h{i} or Leases()",
                f"if not s{i}.soonest > now:",
                f"    s{i}.expire(now)",
                f"if a{i} not in s{i} and len(s{i}) >= L{i}:",
                "    return None",
            ]
            writes += _rounded("d", f"now + W{i}")
            writes += [
                f"s{i}[a{i}] = d",
                f"if d < s{i}.soonest:",
                f"    s{i}.soonest = d",
                f"if d > s{i}.latest:",
                f"    s{i}.latest = d",
                f"r{i} = float(L{i} - len(s{i}))",
                f"data.pop(K{i}, None)",
                f"if not s{i}.latest <= now:",
                f"    data[K{i}] = (s{i}, s{i}.latest)",
            ]
            figures.append(f"True, r{i}, 0.0, 0.0")
        elif kind == QUOTA:  # arith.quota_check
            names += [f"K{i}", f"L{i}", f"E{i}"]
            checks.append(f"u{i} = h{i} or 0.0")
            checks.append(f"if not u{i} + a{i} <= L{i} + {_EPS}:" if strict else f"if not u{i} < L{i}:")
            checks.append("    return None")
            writes += [
                f"v = u{i} + a{i}",
                f"q{i} = L{i} - v",
                f"z{i} = E{i} - now",
                "if isinstance(v, float):",
                *(f"    {line}" for line in _rounded("v", "v")),
                f"data.pop(K{i}, None)",
                f"if not E{i} <= now:",
                f"    data[K{i}] = (v, E{i})",
            ]
            figures.append(f"True, q{i} if q{i} > 0.0 else 0.0, z{i} if z{i} > 0.0 else 0.0, 0.0")
        else:
            raise ValueError(f"no such row kind: {kind!r}")
    body += checks + writes + [f"return [{', '.join(figures)}]"]
    return _maker(names, "admit", body)


def _settle_source(kinds: tuple[str, ...]) -> str:
    """`MemoryStore._apply` of a plan's rows as changes (see `Plan.changes`), row by row as it goes."""
    names: list[str] = []
    body = [f"if len(data) + {len(kinds)} > max_keys:", "    return None"]
    body.append(f"{''.join(f'a{i}, ' for i in range(len(kinds)))}= amounts")
    results: list[str] = []
    for i, kind in enumerate(kinds):
        body += _read(i, kind != SLOT)  # a rate's or a quota's key is popped before it is put back
        if kind == SLOT:  # a release
            names.append(f"K{i}")
            body += [f"if h{i} is not None and h{i}.pop(a{i}, None) is not None and not h{i}:", f"    del data[K{i}]"]
            results.append("0.0")
        elif kind == RATE:  # arith.rate_adjust, then `_put` (a TAT written is a float: base + a float quotient)
            names += [f"K{i}", f"L{i}", f"W{i}", f"I{i}"]
            body += [
                f"t = (now if h{i} is None or h{i} < now else h{i}) + a{i} * W{i} / L{i}",
                "if not t > now:",
                "    t = now",
                *_remaining(f"r{i}", "t", i),
                f"data.pop(K{i}, None)",
                "if not t <= now:",
                *(f"    {line}" for line in _rounded("v", "t")),
                f"    data[K{i}] = (v, t)",
            ]
            results.append(f"r{i}")
        elif kind == QUOTA:  # max(0.0, used + delta), then `_put`
            names += [f"K{i}", f"E{i}"]
            body += [
                f"v = (h{i} or 0.0) + a{i}",
                f"r{i} = v if v > 0.0 else 0.0",
                f"data.pop(K{i}, None)",
                f"if not E{i} <= now:",
                f"    v = r{i}",
                "    if isinstance(v, float):",
                *(f"        {line}" for line in _rounded("v", "v")),
                f"    data[K{i}] = (v, E{i})",
            ]
            results.append(f"r{i}")
        else:
            raise ValueError(f"no such row kind: {kind!r}")
    body.append(f"return [{', '.join(results)}]")
    return _maker(names, "settle", body)


def _maker(names: list[str], name: str, body: list[str]) -> str:
    """A function of a plan's constants that returns the written-out call, closed over them."""
    lines = [f"def make({', '.join(names)}):", f"    def {name}(data, amounts, now, max_keys):"]
    lines += [f"        {line}" for line in body]
    lines.append(f"    return {name}")
    return "\n".join(lines) + "\n"


_MAKERS: dict[tuple[str, object], Callable[..., Any]] = {}  # per shape: its `make` (a few shapes per policy)
_MAKERS_ENTRIES = 256  # shapes remembered (then it starts over)


def _make(which: str, shape: object, source: Callable[[], str]) -> Callable[..., Any]:
    found = _MAKERS.get((which, shape))
    if found is None:
        namespace = dict(_NAMESPACE)
        exec(compile(source(), f"<memory {which} {shape}>", "exec"), namespace)  # our own text, from the shape
        if len(_MAKERS) >= _MAKERS_ENTRIES:
            _MAKERS.clear()
        found = _MAKERS[(which, shape)] = namespace["make"]
    return found


def admission(plan: Plan) -> Admit | Literal[False]:
    """`plan`'s admission written out, bound to its keys and limits, and kept on the plan (`Plan.admits`); False
    for a plan the generic loop keeps: one that checks a key twice (its rows would see each other's changes), a
    rate of limit 0, or no rows."""
    plan.admits = _admission(plan) or False
    return plan.admits  # type: ignore[no-any-return]


def settlement(plan: Plan) -> Settle | Literal[False]:
    """`plan`'s rows as a settlement written out (see `Plan.changes`), kept on the plan (`Plan.settles`); False for
    a rate of limit 0, or no rows."""
    plan.settles = _settlement(plan) or False
    return plan.settles  # type: ignore[no-any-return]


def _admission(plan: Plan) -> Admit | None:
    rows = plan.rows
    if not rows or len({row[1] for row in rows}) != len(rows) or any(row[0] == RATE and not row[2] for row in rows):
        return None
    shape = tuple((kind, bool(strict) if kind == QUOTA else False) for kind, _, _, _, strict in rows)
    values: list[Any] = []
    for kind, key, limit, window, _ in rows:
        if kind == RATE:
            values += [key, window, window / limit]
        else:  # a slot's limit and lease time, a quota's limit and end
            values += [key, limit, window]
    return _make("admit", shape, lambda: _admit_source(shape))(*values)  # type: ignore[no-any-return]


def _settlement(plan: Plan) -> Settle | None:
    rows = plan.rows
    if not rows or any(row[0] == RATE and not row[2] for row in rows):
        return None
    kinds = tuple(row[0] for row in rows)
    values: list[Any] = []
    for kind, key, limit, window, _ in rows:
        if kind == RATE:
            values += [key, limit, window, window / limit]
        elif kind == SLOT:
            values.append(key)
        else:
            values += [key, window]
    return _make("settle", kinds, lambda: _settle_source(kinds))(*values)  # type: ignore[no-any-return]
