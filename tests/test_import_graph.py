"""The layering of src/: utils is a leaf, and no chain of imports (module-level or inside
functions) leads from a module back to itself."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports anywhere in its body}, e.g. "src.training.main"."""
    modules = {".".join(p.relative_to(SRC.parent).with_suffix("").parts)
               .removesuffix(".__init__"): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("src"):
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                deps |= {c for c in candidates if c in modules and c != name}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules and a.name != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph is acyclic."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_find_cycle_reports_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_utils_imports_no_other_package_of_src():
    graph = import_graph()
    assert "src.utils.io" in graph
    outside = {(m, d) for m, deps in graph.items() if m.startswith("src.utils.")
               for d in deps if not d.startswith("src.utils")}
    assert not outside


def test_src_has_no_import_cycle():
    assert find_cycle(import_graph()) == []
