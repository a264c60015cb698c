"""Structured JSON logs: one line per request, and the proxy's own events.

The request line carries identifiers and figures only: never bodies, keys, tokens
or query strings (they may hold credentials).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from proxy.exchange import Exchange

access_log = logging.getLogger("agent_proxy.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "info") -> None:
    # The logging HOWTO's "Optimization": no caller frame walk, thread or process lookups per record;
    # the JSON line never shows them, and the access log writes one record per request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True


def request_fields(ex: Exchange) -> dict[str, Any]:
    caller = ex.caller
    fields: dict[str, Any] = {
        "request_id": ex.request_id,
        "method": ex.method,
        "path": ex.path,
        "route": ex.route.label,
        "caller": caller.name if caller else None,
        "key_id": caller.key_id if caller else None,
        "upstream": ex.upstream_name,
        "model": ex.model_requested,
        "status": ex.status,
        "outcome": ex.outcome.value if ex.outcome else None,
        "stream": ex.streaming,
        "latency_ms": round(ex.elapsed_s * 1000, 2),
        "ttfb_ms": round(ex.ttfb_s * 1000, 2) if ex.ttfb_s is not None else None,
    }
    if ex.decisions:
        fields["decisions"] = [
            f"{stage}:{decision}" + ("" if mode == "enforce" else f"({mode})") for stage, decision, mode in ex.decisions
        ]
    if ex.redactions:
        redactions: dict[str, dict[str, int]] = {}
        for (direction, detector), count in ex.redactions.items():
            redactions.setdefault(direction, {})[detector] = count
        fields["redactions"] = redactions
    if ex.error is not None:
        fields["error"] = {"kind": ex.error.kind, "code": ex.error.code, "source": ex.error.source}
    if ex.usage.known:
        usage = ex.usage
        fields["tokens"] = usage.counts()
        fields["cost_usd"] = ex.cost_usd
        fields["usage_estimated"] = ex.usage_estimated
    return fields


def log_request(ex: Exchange) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("request", extra={"fields": request_fields(ex)})


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
