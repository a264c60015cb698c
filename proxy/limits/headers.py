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
from datetime import UTC, datetime

Report = tuple[int, float, float]  # limit, remaining, seconds until full again


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


def rate_headers(protocol: str, reports: dict[str, Report], now: float | None = None) -> dict[str, str]:
    """`reports` by dimension (`requests`, `tokens`); protocols without a convention get none."""
    headers: dict[str, str] = {}
    for dimension, (limit, remaining, reset_s) in reports.items():
        if protocol == "openai":
            headers[f"x-ratelimit-limit-{dimension}"] = str(limit)
            headers[f"x-ratelimit-remaining-{dimension}"] = str(int(remaining))
            headers[f"x-ratelimit-reset-{dimension}"] = openai_duration(reset_s)
        elif protocol == "anthropic":
            headers[f"anthropic-ratelimit-{dimension}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{dimension}-remaining"] = str(int(remaining))
            headers[f"anthropic-ratelimit-{dimension}-reset"] = rfc3339(reset_s, now)
    return headers


def retry_headers(retry_after_s: float, retry: bool = True) -> dict[str, str]:
    headers = {
        "retry-after": str(max(1, math.ceil(retry_after_s))),
        "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000))),
    }
    if not retry:
        headers["x-should-retry"] = "false"
    return headers
