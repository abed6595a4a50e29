"""The package's import graph, read from the modules' own import statements (also the
ones inside functions): no cycle, and the layers depend one way (DESIGN.md: adapters and
interpretation -> module/fit -> ops -> the compiled extension). Also: `import sfvq_ext`
exposes its API and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import sfvq_ext

PACKAGE = Path(sfvq_ext.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ["sfvq_ext", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (a package's __init__ counts as the package)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                candidates = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                # the deepest module of ours the statement names (``from .x import f`` names module x)
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (a list of modules, first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = import_graph()
    assert "sfvq_ext.ops" in graph["sfvq_ext.quantizer"]  # relative imports are read


def test_no_import_cycle():
    # A package's __init__ that re-exports its modules is an edge package -> module; the
    # implicit import of a parent package by its modules is not counted (as Python runs it).
    graph = import_graph()
    for name in graph:
        parent = name.rpartition(".")[0]
        graph[name].discard(parent)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def depends(graph, name: str) -> set[str]:
    """Everything ``name`` imports, directly or through others (parents excluded)."""
    seen, todo = set(), [name]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen and not name.startswith(target + "."):
                seen.add(target)
                todo.append(target)
    return seen


def test_layers_depend_one_way():
    graph = import_graph()
    below_ops = {"sfvq_ext._C", "sfvq_ext._C_cuda", "sfvq_ext"}
    assert depends(graph, "sfvq_ext.ops") <= below_ops
    assert depends(graph, "sfvq_ext.quantizer") <= below_ops | {"sfvq_ext.ops"}
    upper = ("sfvq_ext.commands", "sfvq_ext.cli", "sfvq_ext.demo", "sfvq_ext.explore")
    for low in ("sfvq_ext.adapters", "sfvq_ext.interpret"):
        for name in [n for n in graph if n == low or n.startswith(low + ".")]:
            bad = sorted(t for t in graph[name] if t.startswith(upper))
            assert not bad, f"{name} imports {bad}: the lower layer must not know the command line or the demo"
    assert not any(t.startswith("sfvq_ext.interpret") for n in graph if n.startswith("sfvq_ext.adapters")
                   for t in graph[n])


def test_the_namespace_is_the_api():
    """`import sfvq_ext` shows its API (``__all__``) and the subpackages users import, and
    holds no other public name: no stdlib or torch module (``re``, ``torch`` were visible)."""
    import types

    assert set(dir(sfvq_ext)) == set(sfvq_ext.__all__) | set(sfvq_ext._SUBPACKAGES)
    for name in (n for n in vars(sfvq_ext) if not n.startswith("_")):
        value = getattr(sfvq_ext, name)
        own_module = isinstance(value, types.ModuleType) and value.__name__.startswith("sfvq_ext.")
        assert name in sfvq_ext.__all__ or own_module, name
    for name in sfvq_ext._SUBPACKAGES:
        __import__(f"sfvq_ext.{name}")
