"""Usage and spend from the ledger, grouped by caller, model, route or day.

Shared by `/admin/usage` and `agent-proxy usage`. Token sums leave out cache hits and
requests without counted usage, exactly as the metrics do, so a report over a fresh
ledger adds up to the `agent_proxy_tokens_total` and `agent_proxy_cost_usd_total` series.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proxy.accounting.ledger import connect

GROUPS = {
    "caller": "COALESCE(caller, '(none)')",
    "model": "COALESCE(model_served, model_requested, '(none)')",
    "route": "route",
    "day": "date(ts, 'unixepoch')",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_COUNTED = "(NOT cache_hit AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL))"
_TOKEN_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass(slots=True)
class UsageRow:
    key: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    unpriced: int  # requests with tokens but no price: their cost is missing from cost_usd
    estimated: int
    cache_hits: int


def parse_since(text: str | None) -> float | None:
    """`24h`, `30m`, `7d`, `2w`, `90s` as seconds; None or `all` for no limit."""
    if text is None or text.strip().lower() == "all":
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"cannot read {text!r} as a duration: use e.g. 90s, 30m, 24h, 7d, 2w or all")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _query(by: str) -> str:
    sums = ",\n".join(f"SUM(CASE WHEN {_COUNTED} THEN COALESCE({c}, 0) ELSE 0 END)" for c in _TOKEN_COLUMNS)
    return f"""
        SELECT {GROUPS[by]} AS key, COUNT(*),
        {sums},
        COALESCE(SUM(CASE WHEN {_COUNTED} THEN cost_usd END), 0.0),
        SUM(CASE WHEN {_COUNTED} AND cost_usd IS NULL
                  AND COALESCE(input_tokens, 0) + COALESCE(cached_input_tokens, 0)
                    + COALESCE(cache_write_tokens, 0) + COALESCE(output_tokens, 0) > 0 THEN 1 ELSE 0 END),
        SUM(estimated), SUM(cache_hit)
        FROM requests WHERE ts >= ? GROUP BY key ORDER BY key
    """


def usage_rows(path: str | Path, since_s: float | None = None, by: str = "caller") -> list[UsageRow]:
    """Blocking: call it from a thread on the event loop."""
    if by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}")
    if not Path(path).exists():
        raise FileNotFoundError(f"no ledger at {path}")
    start = time.time() - since_s if since_s is not None else 0.0
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute(_query(by), (start,)).fetchall()
    except sqlite3.OperationalError as exc:
        raise ValueError(f"{path} is not an agent-proxy ledger: {exc}") from None
    finally:
        conn.close()
    return [UsageRow(str(r[0]), *r[1:]) for r in rows]


def totals(rows: list[UsageRow]) -> UsageRow:
    summed = [sum(getattr(r, f) for r in rows) for f in UsageRow.__dataclass_fields__ if f != "key"]
    return UsageRow("total", *summed)


def report(path: str | Path, since_s: float | None, by: str) -> dict[str, Any]:
    rows = usage_rows(path, since_s, by)
    return {
        "by": by,
        "since_s": since_s,
        "rows": [asdict(r) for r in rows],
        "totals": asdict(totals(rows)),
    }


COLUMNS = (
    ("key", None),
    ("requests", "requests"),
    ("input_tokens", "input"),
    ("cached_input_tokens", "cached in"),
    ("cache_write_tokens", "cache write"),
    ("output_tokens", "output"),
    ("reasoning_tokens", "reasoning"),
    ("cost_usd", "cost USD"),
    ("unpriced", "unpriced"),
    ("estimated", "estimated"),
    ("cache_hits", "cache hits"),
)
MIN_KEY_WIDTH = 8


def render_table(data: dict[str, Any], title: str, width: int | None = None) -> str:
    """A plain-text table of a `report()`, totals last; keys are cut to fit `width` if given."""
    headers = [header or data["by"] for _, header in COLUMNS]
    body = []
    for row in data["rows"]:
        cells = [_cell(field, row[field]) for field, _ in COLUMNS]
        if row["unpriced"] and not row["cost_usd"]:
            cells[7] = "unpriced"
        body.append(cells)
    total = [_cell(field, data["totals"][field]) for field, _ in COLUMNS]
    widths = [max(len(r[i]) for r in (headers, total, *body)) for i in range(len(COLUMNS))]
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        widths[0] = max(MIN_KEY_WIDTH, widths[0] - max(0, excess))

    def line(cells: list[str]) -> str:
        key = cells[0] if len(cells[0]) <= widths[0] else cells[0][: widths[0] - 1] + "~"
        rest = (cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([key.ljust(widths[0]), *rest]).rstrip()

    rule = "-" * len(line(headers))
    return "\n".join([title, line(headers), rule, *(line(r) for r in body), rule, line(total)])


def _cell(field: str, value: Any) -> str:
    if field == "cost_usd":
        return f"{value:.6f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
