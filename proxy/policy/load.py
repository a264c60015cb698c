"""YAML text to a validated `Policy`, with errors that name the field and the line.

Environment variables are interpolated into string values after parsing, so a value
can never change the document's structure: `${NAME}` (missing is an error),
`${NAME:-fallback}`, and `$${` for a literal `${`. Error messages never echo values,
since interpolated values are often secrets.

The text is untrusted too: libyaml (where PyYAML has it) parses it, and each node is
built once, so an alias bomb cannot expand; a document that recurses, nests past
MAX_YAML_DEPTH or stands for more than MAX_YAML_NODES nodes is refused naming its line.
Loading is blocking work: the server does it in a thread (proxy/policy/reload.py).
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


MAX_YAML_NODES = 1_000_000
"""Nodes a document may stand for once every alias is counted where it is used (a 10,000-key policy: ~30,000)."""
MAX_YAML_DEPTH = 100
"""Nesting of mappings and sequences (a policy needs about 10)."""
_MERGE = "tag:yaml.org,2002:merge"
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it


class _LineLoader(_Loader):  # type: ignore[misc, valid-type]
    """A safe loader (libyaml's scanner, parser and composer where available) used for its nodes only."""


class _Builder:
    """Nodes to Python objects, each node built once: an alias shares what its anchor built.

    PyYAML's own constructor also shares, but records no lines; walking the node tree per
    reference instead would expand an alias bomb. `size` counts the nodes the document
    stands for with every alias expanded, which is what later steps (interpolation,
    validation) walk, so that is what is bounded.
    """

    def __init__(self, loader: _LineLoader):
        self.loader = loader
        self.lines: dict[Location, int] = {}
        self.size = 0
        self._built: dict[int, tuple[Any, int]] = {}  # id(node) -> (object, expanded size)
        self._open: set[int] = set()  # nodes being built: meeting one again is a recursive alias

    def build(self, node: yaml.Node, path: Location = (), depth: int = 0) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        done = self._built.get(id(node))
        if done is not None:  # an alias: the same object, and its whole size again
            self._grow(done[1], node)
            return done[0]
        if id(node) in self._open:
            raise _error("an alias refers to a node that contains it (a recursive alias)", node, _Unsafe)
        if depth > MAX_YAML_DEPTH:
            raise _error(f"nested more than {MAX_YAML_DEPTH} levels deep", node, _Unsafe)
        before = self.size
        self._grow(1, node)
        self._open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            result: Any = self._mapping(node, path, depth)
        elif isinstance(node, yaml.SequenceNode):
            result = [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        else:
            result = self.loader.construct_object(node, deep=True)
        self._open.discard(id(node))
        self._built[id(node)] = (result, self.size - before)
        return result

    def _mapping(self, node: yaml.MappingNode, path: Location, depth: int) -> dict[Any, Any]:
        """`<<` merges first, in order of precedence (the first listed wins), then the mapping's own keys."""
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise _error("`<<` merges mappings only", source)
                    built = self.build(source, path, depth + 1)
                    merged = {**built, **merged}
                continue
            key = self._key(key_node)
            if key in own:
                raise _error(f"duplicate key '{key}'", key_node)
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            own[key] = self.build(value_node, (*path, key), depth + 1)
        return {**merged, **own}

    def _key(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise _error("mapping keys must be plain scalars", node)
        return self.loader.construct_object(node, deep=True)

    def _grow(self, count: int, node: yaml.Node) -> None:
        self.size += count
        if self.size > MAX_YAML_NODES:
            problem = f"the document expands to more than {MAX_YAML_NODES} nodes (aliases counted where used)"
            raise _error(problem, node, _Unsafe)


class _Unsafe(yaml.MarkedYAMLError):
    """Valid YAML that is refused: it recurses, nests or expands past a bound."""


def _error(problem: str, node: yaml.Node, kind: type[yaml.MarkedYAMLError] = yaml.MarkedYAMLError) -> Exception:
    return kind(problem=problem, problem_mark=node.start_mark)


def parse_yaml(text: str) -> tuple[Any, dict[Location, int]]:
    """The document and, for every path in it, the line it starts on."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _Builder(loader)
        return builder.build(node), builder.lines
    except RecursionError:  # the pure-Python composer, on nesting deeper than the interpreter's stack
        raise _Unsafe(problem=f"nested too deep (more than {MAX_YAML_DEPTH} levels)") from None
    finally:
        loader.dispose()


def interpolate(
    data: Any,
    env: Mapping[str, str],
    path: Location = (),
    missing: list[Location] | None = None,
    done: dict[int, Any] | None = None,
) -> Any:
    """Replace `${NAME}` in every string value; paths with missing variables go to `missing`.

    What an alias shares is interpolated once and stays shared (`done`, by id).
    """
    if isinstance(data, dict | list):
        done = {} if done is None else done
        if id(data) in done:
            return done[id(data)]
        if isinstance(data, dict):
            result: Any = {k: interpolate(v, env, (*path, k), missing, done) for k, v in data.items()}
        else:
            result = [interpolate(v, env, (*path, i), missing, done) for i, v in enumerate(data)]
        done[id(data)] = result
        return result
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
        kind = "YAML refused" if isinstance(exc, _Unsafe) else "YAML syntax"
        raise PolicyError(source, [f"{where}{kind}: {problem}"]) from None
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
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    return policy_from_text(text, str(path), env)
