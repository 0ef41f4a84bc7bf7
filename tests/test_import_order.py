"""The package's units import one another one way only: no cycle, imports inside functions included."""

import ast
from pathlib import Path

import ddpmlab

PACKAGE = Path(ddpmlab.__file__).parent


def unit_of(module: str) -> str:
    """ddpmlab.store.load -> "store", ddpmlab.rng -> "rng", ddpmlab -> "ddpmlab" (the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ddpmlab"


def unit_imports() -> dict[str, set[str]]:
    """{unit: the other units any of its files imports}, from every import statement wherever it stands."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(part for part in relative.parts if part != "__init__")
        unit = unit_of(module)
        edges = graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "ddpmlab" else [f"ddpmlab.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] == "ddpmlab" and unit_of(name) != unit:
                    edges.add(unit_of(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of units as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = "open"
        for other in sorted(graph.get(unit, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other] if other in path else [unit, other]
            if other not in state:
                found = visit(other, path + [other])
                if found:
                    return found
        state[unit] = "done"
        return None

    for unit in sorted(graph):
        if unit not in state:
            found = visit(unit, [unit])
            if found:
                return found
    return None


def test_no_unit_imports_one_that_imports_it_back():
    assert find_cycle(unit_imports()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_lowest_units_import_no_higher_one():
    graph = unit_imports()
    assert graph["errors"] == set()
    assert graph["samplers"] <= {"diffusion", "errors", "rng", "paths"}
    assert "commands" not in set().union(*(edges for unit, edges in graph.items() if unit not in ("cli", "commands")))
