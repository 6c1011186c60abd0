"""The layers reach one way: the core never imports the analyses, the commands or the CLI, and no two modules
import each other, counting imports made only for type checking (function-level imports, which run late, are
listed but allowed to close a loop: `GPT2.from_pretrained` reaches the checkpoint reader that way).

    python tests/test_import_graph.py     # prints the graph, the core's upward imports and the cycles
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minigpt_geom"
UPPER = ("minigpt_geom.analysis", "minigpt_geom.commands", "minigpt_geom.cli", "minigpt_geom.__main__")


def module_name(path: Path) -> str:
    """minigpt_geom/analysis/lens.py -> minigpt_geom.analysis.lens; a package's __init__.py -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(name: str) -> bool:
    """True when `name` is a module or package of minigpt_geom."""
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The minigpt_geom modules an import statement loads (`from . import fused` loads minigpt_geom.model.fused)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        source = ".".join(base + ([node.module] if node.module else []))
        names = [f"{source}.{alias.name}" if exists(f"{source}.{alias.name}") else source for alias in node.names]
    return [name for name in names if name.split(".")[0] == "minigpt_geom" and exists(name)]


def import_graph() -> dict[str, dict[str, str]]:
    """{module: {imported module: "top" | "type" | "lazy"}}: at import time, under TYPE_CHECKING, or in a function."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        kind_of: dict[int, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                kind_of.update({id(sub): "type" for sub in ast.walk(node)})
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                kind_of.update({id(sub): kind_of.get(id(sub), "lazy") for sub in ast.walk(node)})
        edges: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, package):
                    kind = kind_of.get(id(node), "top")
                    if target != name and edges.get(target) != "top":  # an import at load time outranks the others
                        edges[target] = kind if edges.get(target) in (None, "lazy") else edges[target]
        graph[name] = edges
    return graph


def is_core(name: str) -> bool:
    """The model and its machinery: everything but the package's front (__init__), analyses, commands and CLI."""
    return name != "minigpt_geom" and not name.startswith(UPPER)


def upward_imports(graph: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(core module, analysis/commands/CLI module it imports, how)."""
    return [(name, target, kind) for name, edges in graph.items() if is_core(name)
            for target, kind in edges.items() if target.startswith(UPPER)]


def cycles(graph: dict[str, dict[str, str]], kinds: tuple[str, ...] = ("top", "type")) -> list[list[str]]:
    """Every elementary cycle through edges of the given kinds (imports of the package itself left out), once each."""
    found: dict[frozenset, list[str]] = {}

    def walk(path: list[str]) -> None:
        for target, kind in graph.get(path[-1], {}).items():
            if kind not in kinds or target == "minigpt_geom":
                continue
            if target == path[0]:
                found.setdefault(frozenset(path), path + [target])
            elif target not in path and target > path[0]:  # each cycle from its smallest module only
                walk(path + [target])

    for name in sorted(graph):
        walk([name])
    return list(found.values())


def test_the_core_never_imports_analyses_commands_or_the_cli():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle_not_even_for_type_checking():
    assert cycles(import_graph()) == []


def test_the_graph_sees_every_kind_of_import():
    # the checks above are only as good as the graph: it must find a known import of each kind
    graph = import_graph()
    assert graph["minigpt_geom.model.block"]["minigpt_geom.model.attention"] == "top"
    assert graph["minigpt_geom.model.attention"]["minigpt_geom.model.fused"] == "top"  # `from . import fused`
    assert graph["minigpt_geom.model.attention"]["minigpt_geom.model.cache"] == "type"
    assert graph["minigpt_geom.commands.init"]["minigpt_geom.training.run_folder"] == "lazy"
    assert cycles({"a": {"b": "type"}, "b": {"a": "top"}}) == [["a", "b", "a"]]


if __name__ == "__main__":
    graph = import_graph()
    short = lambda name: name.removeprefix("minigpt_geom.")  # noqa: E731
    for name, edges in graph.items():
        print(f"{short(name):22s} -> " + ", ".join(short(t) + ("" if k == "top" else f" ({k})")
                                                   for t, k in sorted(edges.items())))
    print("\ncore -> analysis/commands/cli:",
          ", ".join(f"{short(a)} -> {short(b)} ({k})" for a, b, k in upward_imports(graph)) or "none")
    print("cycles (top-level and TYPE_CHECKING imports):",
          "; ".join(" -> ".join(map(short, c)) for c in cycles(graph)) or "none")
    print("cycles closed by a function-level import:",
          "; ".join(" -> ".join(map(short, c)) for c in cycles(graph, ("top", "type", "lazy"))
                    if c not in cycles(graph)) or "none")
