"""Imports go one way, down the package's folders, and close no cycle of any kind.

    errors, config  <  io  <  model  <  text  <  training  <  analysis  <  commands  <  cli, __main__, __init__

A module may import its own folder or any folder before it, never one after: at import time, under
TYPE_CHECKING, or inside a function (commands import torch-heavy modules inside functions to keep `--help`
fast; that is allowed, an import that reaches up or closes a loop is not). Read from the source with `ast`,
nothing is imported.

    python tests/test_import_graph.py     # prints the folders' order, what each imports, and any fault
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minigpt_geom"
# bottom to top; a module's layer is that of the first entry naming it or a folder above it
LAYERS = (("errors", "config", "memory"), ("io",), ("model",), ("text",), ("training",), ("analysis",), ("commands",),
          ("cli", "__main__", "__init__"))
KINDS = ("top", "type", "lazy")  # at import time, under TYPE_CHECKING, inside a function


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
                    if target != name and KINDS.index(kind) <= KINDS.index(edges.get(target, "lazy")):
                        edges[target] = kind  # the earliest kind wins: an import at load time outranks the others
        graph[name] = edges
    return graph


def layer(name: str) -> int:
    """The index in LAYERS of a module's folder: minigpt_geom.model.sphere -> 2; the package itself is on top."""
    first = name.split(".")[1] if "." in name else "__init__"
    for index, folders in enumerate(LAYERS):
        if first in folders:
            return index
    raise ValueError(f"{name} is in no layer: add its folder to LAYERS")


def upward_imports(graph: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(module, module of a later layer it imports, how): every import that reaches up."""
    return [(name, target, kind) for name, edges in graph.items() for target, kind in edges.items()
            if layer(target) > layer(name)]


def cycles(graph: dict[str, dict[str, str]], kinds: tuple[str, ...] = KINDS) -> list[list[str]]:
    """Every elementary cycle through edges of the given kinds, once each (from its smallest module)."""
    found: dict[frozenset, list[str]] = {}

    def walk(path: list[str]) -> None:
        for target, kind in graph.get(path[-1], {}).items():
            if kind not in kinds:
                continue
            if target == path[0]:
                found.setdefault(frozenset(path), path + [target])
            elif target not in path and target > path[0]:
                walk(path + [target])

    for name in sorted(graph):
        walk([name])
    return list(found.values())


def folder(name: str) -> str:
    """minigpt_geom.model.sphere -> model; minigpt_geom -> __init__."""
    return name.split(".")[1] if "." in name else "__init__"


def test_every_module_is_in_a_layer():
    assert all(isinstance(layer(name), int) for name in import_graph())


def test_no_import_reaches_up_not_even_for_type_checking_or_inside_a_function():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle_of_any_kind():
    assert cycles(import_graph()) == []


def test_the_graph_sees_every_kind_of_import():
    # the checks above are only as good as the graph: it must find a known import of each kind
    graph = import_graph()
    assert graph["minigpt_geom.model.block"]["minigpt_geom.model.attention"] == "top"
    assert graph["minigpt_geom.io.checkpoint"]["minigpt_geom.io.hub"] == "top"
    assert graph["minigpt_geom"]["minigpt_geom.model.gpt2"] == "type"
    assert graph["minigpt_geom.commands.init"]["minigpt_geom.training.run_folder"] == "lazy"


def test_the_checks_fail_on_an_upward_import_or_a_cycle():
    # a fake graph with each fault: the checker must name it
    upward = {"minigpt_geom.io.files": {"minigpt_geom.model.gpt2": "lazy"}, "minigpt_geom.model.gpt2": {}}
    assert upward_imports(upward) == [("minigpt_geom.io.files", "minigpt_geom.model.gpt2", "lazy")]
    a, b = "minigpt_geom.model.a", "minigpt_geom.model.b"
    loop = {a: {b: "top"}, b: {a: "lazy"}}
    assert upward_imports(loop) == []  # within one folder: allowed, but not in a circle
    assert cycles(loop) == [[a, b, a]]
    assert cycles({a: {b: "type"}, b: {a: "top"}}) == [[a, b, a]]
    order = ["errors", "io.files", "model.gpt2", "text.tokenizer", "training.loop", "analysis.lens", "commands.lens",
             "cli"]
    assert [layer(f"minigpt_geom.{name}") for name in order] == list(range(len(LAYERS)))
    assert layer("minigpt_geom") == layer("minigpt_geom.__main__") == len(LAYERS) - 1


if __name__ == "__main__":
    graph = import_graph()
    short = lambda name: name.removeprefix("minigpt_geom.")  # noqa: E731
    print("folders, bottom to top:", "  <  ".join(", ".join(names) for names in LAYERS))
    reached: dict[str, set[str]] = {}
    for name, edges in graph.items():
        reached.setdefault(folder(name), set()).update(folder(t) for t in edges if folder(t) != folder(name))
    for name in (name for names in LAYERS for name in names if name in reached):
        below = sorted(reached[name], key=lambda f: layer(f"minigpt_geom.{f}"))
        print(f"  {name:10s} imports {', '.join(below) or 'nothing of the package'}")
    print("imports that reach up:", ", ".join(f"{short(a)} -> {short(b)} ({k})" for a, b, k in upward_imports(graph))
          or "none")
    print("cycles (at import time, under TYPE_CHECKING or inside a function):",
          "; ".join(" -> ".join(map(short, c)) for c in cycles(graph)) or "none")
