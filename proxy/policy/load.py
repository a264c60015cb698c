"""YAML text to a validated `Policy`, with errors that name the field and the line.

Environment variables are interpolated into string values after parsing, so a value
can never change the document's structure: `${NAME}` (missing is an error),
`${NAME:-fallback}`, and `$${` for a literal `${`. Error messages never echo values,
since interpolated values are often secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from proxy.policy.schema import Policy

_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Location = tuple[str | int, ...]


class PolicyError(Exception):
    """An invalid policy; `problems` are readable lines, each naming a field and a line."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: invalid policy\n" + "\n".join(f"  - {p}" for p in problems))
        self.source = source
        self.problems = problems


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence item."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.checked: set[int] = set()  # mappings already checked for duplicate keys (aliases revisit them)


def _key(loader: _LineLoader, key_node: yaml.Node) -> Any:
    key = loader.construct_object(key_node, deep=True)
    if not isinstance(key, str | int | bool | float):
        raise yaml.MarkedYAMLError(problem="mapping keys must be plain scalars", problem_mark=key_node.start_mark)
    return key


def _reject_duplicates(loader: _LineLoader, node: yaml.MappingNode) -> None:
    """Before `<<` merges are applied: a key written twice is an error, a merged key is overridable."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = _key(loader, key_node)
        if key in seen:
            raise yaml.MarkedYAMLError(problem=f"duplicate key '{key}'", problem_mark=key_node.start_mark)
        seen.add(key)


def _construct(loader: _LineLoader, node: yaml.Node, path: Location, lines: dict[Location, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        if id(node) not in loader.checked:
            loader.checked.add(id(node))
            _reject_duplicates(loader, node)
        loader.flatten_mapping(node)  # merged keys come first, so the mapping's own keys override them
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _key(loader, key_node)
            result[key] = _construct(loader, value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str) -> tuple[Any, dict[Location, int]]:
    """The document and, for every path in it, the line it starts on."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Location, int] = {}
        data = _construct(loader, node, (), lines) if node is not None else None
    finally:
        loader.dispose()
    return data, lines


def interpolate(data: Any, env: Mapping[str, str], path: Location = (), missing: list[Location] | None = None) -> Any:
    """Replace `${NAME}` in every string value; paths with missing variables go to `missing`."""
    if isinstance(data, dict):
        return {k: interpolate(v, env, (*path, k), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, (*path, i), missing) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, fallback = match.group(1), match.group(2)
        value = env.get(name)
        if value is None:
            if fallback is not None:
                return fallback
            if missing is not None:
                missing.append((*path, name))
            return ""
        return value

    return _ENV.sub(substitute, data)


def _dotted(loc: Location) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(loc: Location, lines: dict[Location, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _where(loc: Location, lines: dict[Location, int]) -> str:
    line = _line_of(loc, lines)
    return f"{_dotted(loc)} (line {line})" if line else _dotted(loc)


def _validation_problems(err: ValidationError, lines: dict[Location, int]) -> list[str]:
    problems = []
    for item in err.errors(include_input=False, include_url=False):
        # Pydantic adds the name of a union member or validator kind to loc; keep real keys only.
        loc = tuple(p for p in item["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "literal[")))
        # A cross-field check names the field it is about in its context, since its own loc is the whole model.
        loc += tuple((item.get("ctx") or {}).get("field", ()))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        if "[key]" in loc:  # pydantic's marker for a mapping key that failed, rather than its value
            loc = tuple(p for p in loc if p != "[key]")
            message = f"invalid name: {message}"
        problems.append(f"{_where(loc, lines)}: {message}")
    return problems


def policy_from_text(text: str, source: str = "<policy>", env: Mapping[str, str] | None = None) -> Policy:
    """Parse, interpolate and validate; raises PolicyError with every problem found."""
    try:
        raw, lines = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(source, [f"{where}YAML syntax: {problem}"]) from None
    if not isinstance(raw, dict):
        raise PolicyError(source, ["the policy must be a YAML mapping (version, upstreams, routes, ...)"])
    missing: list[Location] = []
    data = interpolate(raw, os.environ if env is None else env, missing=missing)
    if missing:
        raise PolicyError(
            source,
            [f"{_where(loc[:-1], lines)}: environment variable {loc[-1]} is not set" for loc in missing],
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, _validation_problems(exc, lines)) from None


def load_policy(path: str | Path, env: Mapping[str, str] | None = None) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    return policy_from_text(text, str(path), env)
