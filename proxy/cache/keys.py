"""Cache keys: a hash over the canonical request and the scope it may be shared in.

The request is canonicalised by the route's adapter (`cache_fields`: the body without what
does not change the answer, such as `stream` or `user`), serialised with sorted keys, and
hashed with the scope, the route and the endpoint (path, query string, API version headers):
the same body on another endpoint, or from another caller under `scope: caller`, is another
key. The semantic partition is the same hash without the final user turn's text, so
near-identical questions are only ever compared under the same scope, model, system prompt,
tools, earlier turns and sampling settings.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from proxy.exchange import Caller

VERSION = "1"  # bumped when canonicalisation changes, so old keys simply stop matching


def scope_id(scope: str, caller: Caller | None) -> str | None:
    """Who may share an entry; None for a request without an identified caller under `caller` or `team`."""
    if scope == "global":
        return "global"
    if caller is None:
        return None
    return f"caller:{caller.name}" if scope == "caller" else f"team:{caller.profile}"


def request_hash(kind: str, scope: str, route: str, endpoint: Any, fields: Any) -> str:
    """sha256 hex of the canonical request; `kind` keeps exact keys and partitions apart.

    `endpoint` is what besides the body decides the answer: the path, the query string and the
    protocol's answer headers (proxy/protocols/base.py, `answer_headers`)."""
    canonical = orjson.dumps([VERSION, kind, scope, route, endpoint, fields], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def exact_key(scope: str, route: str, endpoint: Any, fields: Any) -> str:
    return request_hash("exact", scope, route, endpoint, fields)


def partition(scope: str, route: str, endpoint: Any, fields: Any) -> str:
    return request_hash("semantic", scope, route, endpoint, fields)
