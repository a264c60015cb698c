"""Structured JSON logs: one line per request, and the proxy's own events.

The request line carries identifiers and figures only: never bodies, keys, tokens
or query strings (they may hold credentials). Every field that comes from a request
is bounded and either a name the policy defines or sanitised: the path is logged as
the matched route's path or prefix plus the length of the rest (a well-known API
endpoint excepted), the model is cut to `MAX_MODEL_CHARS` of a restricted set.
"""

from __future__ import annotations

import logging
import re
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


MAX_MODEL_CHARS = 128
_NOT_MODEL_CHAR = re.compile(r"[^A-Za-z0-9._:/@+-]")
# What follows a prefix route's prefix that is logged as is: the LLM APIs' own endpoints, no caller data.
KNOWN_ENDPOINTS = frozenset(
    {
        "chat/completions",
        "completions",
        "responses",
        "embeddings",
        "models",
        "moderations",
        "messages",
        "messages/count_tokens",
        "v1/chat/completions",
        "v1/completions",
        "v1/responses",
        "v1/embeddings",
        "v1/models",
        "v1/messages",
        "v1/messages/count_tokens",
    }
)


def logged_path(ex: Exchange) -> str:
    """The route's own path or prefix, then `[N bytes]` for the rest (ids, names, emails live there)."""
    route = ex.route
    if route.prefix is None:
        return route.path or "?"
    rest = ex.path[len(route.prefix) :]
    if not rest or rest in KNOWN_ENDPOINTS:
        return route.prefix + rest
    return f"{route.prefix}[{len(rest.encode('utf-8', 'surrogateescape'))} bytes]"


def logged_model(model: Any) -> str | None:
    """The model as the caller named it, cut and restricted to the characters model names use."""
    if not isinstance(model, str):
        return None
    cut = _NOT_MODEL_CHAR.sub("?", model[:MAX_MODEL_CHARS])
    return cut + "..." if len(model) > MAX_MODEL_CHARS else cut


def request_fields(ex: Exchange) -> dict[str, Any]:
    caller = ex.caller
    fields: dict[str, Any] = {
        "request_id": ex.request_id,
        "method": ex.method[:16],  # an HTTP token (the parser checked its characters)
        "path": logged_path(ex),
        "route": ex.route.label,
        "caller": caller.name if caller else None,
        "key_id": caller.key_id if caller else None,
        "upstream": ex.upstream_name,
        "model": logged_model(ex.model_requested),
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
        fields["tokens"] = {k: v for k in usage.__slots__ if (v := getattr(usage, k)) is not None}
        fields["cost_usd"] = ex.cost_usd
        fields["usage_estimated"] = ex.usage_estimated
    return fields


def log_request(ex: Exchange) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("request", extra={"fields": request_fields(ex)})


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
