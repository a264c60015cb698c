"""Rate-limit headers in each provider's own convention, so SDKs and agents back off correctly.

OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset as a duration
(`1s`, `6m0s`, `250ms`). Anthropic: `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`,
the reset as an RFC 3339 time. Refusals add `retry-after` (whole seconds) and
`retry-after-ms`, which both SDKs prefer; `x-should-retry: false` tells them not to
retry what waiting a little cannot fix (a spent budget, a run's limit, a loop).
"""

from __future__ import annotations

import math
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime

Report = tuple[int, float, float]  # limit, remaining, seconds until full again
_ceil = math.ceil


def openai_duration(seconds: float) -> str:
    """Go-style durations as OpenAI sends them: 250ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    seconds = math.ceil(seconds * 1000) / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def rfc3339(seconds_from_now: float, now: float | None = None) -> str:
    at = (time.time() if now is None else now) + max(0.0, seconds_from_now)
    return datetime.fromtimestamp(math.ceil(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _names(protocol: str, dimension: str) -> tuple[str, str, str]:
    """A dimension's limit, remaining and reset header names in `protocol`'s convention."""
    if protocol == "openai":
        prefix = "x-ratelimit-"
        return f"{prefix}limit-{dimension}", f"{prefix}remaining-{dimension}", f"{prefix}reset-{dimension}"
    prefix = f"anthropic-ratelimit-{dimension}-"
    return f"{prefix}limit", f"{prefix}remaining", f"{prefix}reset"


# Header names per protocol and dimension, built once: a response only formats the numbers.
_NAMES: dict[str, dict[str, tuple[str, str, str]]] = {
    protocol: {dimension: _names(protocol, dimension) for dimension in ("requests", "tokens")}
    for protocol in ("openai", "anthropic")
}


def header_names(protocol: str, dimension: str) -> tuple[str, str, str] | None:
    """A dimension's header names in `protocol`'s convention; None for a protocol without one."""
    names = _NAMES.get(protocol)
    if names is None:
        return None
    return names.get(dimension) or _names(protocol, dimension)


def put_rate_header(
    target: MutableMapping[str, str],
    openai: bool,
    names: tuple[str, str, str],
    limit: str,
    remaining: float,
    reset_s: float,
    now: float | None = None,
) -> None:
    """Sets one dimension's limit, remaining and reset headers (`names`), in OpenAI's convention or Anthropic's."""
    limit_name, remaining_name, reset_name = names
    target[limit_name] = limit
    target[remaining_name] = str(int(remaining))
    if not openai:
        target[reset_name] = rfc3339(reset_s, now)
    elif 0.0 <= reset_s < 1.0:  # `openai_duration`'s first case, the usual one, without the call
        target[reset_name] = f"{_ceil(reset_s * 1000)}ms"
    else:
        target[reset_name] = openai_duration(reset_s)


def put_rate_headers(
    target: MutableMapping[str, str], protocol: str, reports: dict[str, Report], now: float | None = None
) -> None:
    """Sets `reports`' headers (by dimension) on `target`; protocols without a convention get none."""
    names = _NAMES.get(protocol)
    if names is None:
        return
    openai = protocol == "openai"
    for dimension, (limit, remaining, reset_s) in reports.items():
        dimension_names = names.get(dimension) or _names(protocol, dimension)
        put_rate_header(target, openai, dimension_names, str(limit), remaining, reset_s, now)


def rate_headers(protocol: str, reports: dict[str, Report], now: float | None = None) -> dict[str, str]:
    """`reports` by dimension (`requests`, `tokens`) as headers; protocols without a convention get none."""
    headers: dict[str, str] = {}
    put_rate_headers(headers, protocol, reports, now)
    return headers


def retry_headers(retry_after_s: float, retry: bool = True) -> dict[str, str]:
    headers = {
        "retry-after": str(max(1, math.ceil(retry_after_s))),
        "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000))),
    }
    if not retry:
        headers["x-should-retry"] = "false"
    return headers
