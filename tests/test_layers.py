"""prefkit's packages are layers (docs/architecture.md): a module imports only from its own package and the
packages below it, and no modules import each other in a circle. Read from the source with ``ast``, every
import counted -- inside functions and under ``TYPE_CHECKING`` too -- so a layer cannot be climbed by a
deferred import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "prefkit"
# Lowest first. The base modules (errors, env, builtin data) are below every layer.
BASE = ("errors", "env", "builtin")
LAYERS = (
    "config",
    "data",
    "model",
    "infer",
    "score",
    "train",
    "evaluate",
    "quickstart",
    "sweep",
    "arena",
    "web",
    "ui",
    "serve",
    "cli",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """The prefkit modules ``path`` imports (``from prefkit.x import y`` counts as prefkit.x.y when that
    is a module, else prefkit.x), with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("prefkit")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prefkit"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append((candidate if candidate in MODULES else node.module, node.lineno))
    return found


MODULES = {module_name(p) for p in SRC.rglob("*.py")}
GRAPH = {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def rank(module: str) -> int:
    """The layer of ``prefkit.<package>...``: -1 for the base modules and the package itself."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE or parts[1] == "__main__":
        return -1
    return LAYERS.index(parts[1])


def test_every_package_is_a_known_layer_and_nothing_else_is_top_level():
    tops = {p.name.removesuffix(".py") for p in SRC.iterdir() if p.name != "__pycache__"}
    assert tops - {"__init__", "__main__", "static"} <= set(LAYERS) | set(BASE), tops - set(LAYERS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_climbs_a_layer(module):
    if module.endswith("__main__"):
        return  # `python -m prefkit` is the command itself
    upward = [f"{target} (line {line})" for target, line in GRAPH[module] if rank(target) > rank(module)]
    assert not upward, f"{module} imports from a higher layer: {', '.join(upward)}"


def test_no_modules_import_each_other_in_a_circle():
    # An import of a package is an edge to its __init__ alone (which may re-export its modules).
    edges = {m: {t for t, _ in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
