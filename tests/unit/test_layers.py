"""The house plan: no import cycle anywhere in `proxy/`, and lower layers never import higher ones.

Every import counts, those under `if TYPE_CHECKING:` and those inside functions too: a cycle
hidden in a function is still a knot a reader has to untie.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"

# Lower layers, and what they may never import (README, "Layers").
LOWER = (
    "proxy.errors",
    "proxy.exchange",
    "proxy.protocols",
    "proxy.state",
    "proxy.policy.base",
    "proxy.policy.schema",
    "proxy.policy.load",
    "proxy.policy.context",
    "proxy.policy.stage_spec",
    "proxy.policy.stage_order",
    "proxy.metrics",
)
HIGHER = ("proxy.stages", "proxy.policy.compile", "proxy.app", "proxy.handler", "proxy.server", "proxy.cli")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` folders up
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_cycle_in_the_package():
    assert cycles(graph()) == []


def test_lower_layers_never_import_higher_ones():
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        if under(source, LOWER) and not under(source, HIGHER)
        for target in targets
        if under(target, HIGHER)
    )
    assert wrong == []


def test_the_checks_see_a_cycle_and_a_wrong_direction():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert under("proxy.stages.usage", HIGHER) and under("proxy.policy.schema", LOWER)
