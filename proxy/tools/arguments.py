"""Arguments checked against a JSON Schema (a tool's `inputSchema`, an http tool's body schema) with `jsonschema`.

A schema comes from a tool server or the policy; it is checked once and compiled into a
validator kept with it. An error names the field that is wrong as a path
(`arguments.path`, `body.items[2].id`) and says why, without echoing the value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson
from cachetools import LRUCache

from proxy.own_size import own_size

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

MAX_REASON = 200
COMPILED_SCHEMAS = 1024  # distinct schemas kept compiled: every session of a server lists the same ones
_compiled: LRUCache[bytes, Validator | None] = LRUCache(COMPILED_SCHEMAS)
_lock = threading.Lock()  # policy compiles in a thread; requests compile on the loop
_BOUNDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems"}
    | {"multipleOf", "pattern", "format"}
)


@cache
def library() -> ModuleType:
    """The library, imported on first use (about 3 MB resident): only policies that check tool
    arguments need it, and the tool governance stage imports it when such a policy compiles."""
    import jsonschema.exceptions
    import jsonschema.validators

    return jsonschema


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema, or None."""
    if not isinstance(schema, dict):
        return "a schema is a JSON object"
    jsonschema = library()
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        return _short(err.message)
    return None


def compile_schema(schema: Any) -> Validator | None:
    """A validator for the schema (its own draft, by `$schema`), or None when the schema is unusable.

    Checking a schema against its metaschema takes milliseconds: a schema seen before (the same
    tool listed in another session) reuses its validator.
    """
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    with _lock:
        if key in _compiled:
            return _compiled[key]
    validator = None
    if schema_problem(schema) is None:
        cls = library().validators.validator_for(schema)
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    with _lock:
        _compiled[own_size(key)] = validator
    return validator


def problem(validator: Validator, value: Any, root: str) -> str | None:
    """The first thing wrong with `value`, naming the field, or None when it is valid."""
    try:
        error = library().exceptions.best_match(validator.iter_errors(value))
    except Exception:  # a `$ref` it cannot follow offline, a construct refused at use time: the server checks
        return None
    if error is None:
        return None
    field = field_path(root, error.absolute_path)
    if error.validator == "required" and isinstance(error.validator_value, list):
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = next((name for name in error.validator_value if name not in instance), None)
        if isinstance(missing, str):
            return f"'{field_path(field, [missing])}' is required"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = next((name for name in error.instance if name not in props), None)
        if isinstance(extra, str):
            return f"'{field_path(field, [extra])}' is not an allowed field"
    return f"'{field}' is invalid: {_short(_reason(error))}"


def body_problem(body: bytes, validator: Validator) -> str | None:
    """What is wrong with a request body that must be JSON satisfying the validator's schema, or None."""
    if not body:
        return "'body' is required"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "'body' is not valid JSON"
    return problem(validator, value, "body")


def field_path(root: str, parts: Iterable[Any]) -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{str(part)[:64]}"
    return out


def _reason(error: ValidationError) -> str:
    """What the keyword demands, in the library's words where they do not quote the value."""
    keyword, expected = error.validator, error.validator_value
    if keyword == "type":
        return f"expected {expected if isinstance(expected, str) else ' or '.join(map(str, expected))}"
    if keyword in _BOUNDS:
        return f"fails {keyword} {expected}"
    if keyword == "enum":
        return "not one of the allowed values"
    if keyword == "const":
        return "not the required value"
    return f"fails '{keyword}'"


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
