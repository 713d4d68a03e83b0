"""The package's import graph: one way up the layers, no cycles, no imports hidden inside functions.

Layers, lowest first (a module may import its own layer and the ones below):
errors, io -> config, pose -> data -> simmarket -> models -> api -> eval -> training -> shipped -> reid
-> augment.makers -> augment.gallery -> augment.jobs -> augment.cli.
"""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("generator", "augment", "reid")
LAYERS = [
    ("generator.errors", "generator.io"),
    ("generator.config", "generator.pose", "generator.device"),
    ("generator.data",),
    ("generator.simmarket",),
    ("generator.models",),
    ("generator.api",),
    ("generator.eval",),
    ("generator.training",),
    ("generator.shipped",),
    ("reid",),
    ("augment.makers",),
    ("augment.gallery",),
    ("augment.jobs",),
    ("augment.cli",),
]
# heavy dependencies that stay optional at import time: imported where they are used
LAZY = ("torchreid", "faiss", "matplotlib", "mediapipe")


def layer_of(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                best = rank
    if best is None:
        raise AssertionError(f"{module}: not placed in a layer; add it to LAYERS in tests/test_imports.py")
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """({module: project modules it imports}, ["module:line: in-function import of X"])."""
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    inside: list[str] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from generator.training import stage1` imports the submodule generator.training.stage1
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                continue
            for t in targets:
                if id(node) in in_function and t.split(".")[0] not in LAZY:
                    inside.append(f"{mod}:{node.lineno}: in-function import of {t}")
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph, inside


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer_of(m)}) imports {n} (layer {layer_of(n)})"
            for m, deps in sorted(graph.items()) for n in sorted(deps) if layer_of(n) > layer_of(m)]


def test_no_cycle_and_no_upward_import():
    graph, _ = import_graph()
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert upward_imports(graph) == []


def test_no_import_inside_functions():
    _, inside = import_graph()
    assert inside == []


def test_every_module_imports():
    graph, _ = import_graph()
    for mod in sorted(graph):
        importlib.import_module(mod)


def _copy_packages(dst: Path) -> None:
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            target = dst / p.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(p.read_text())


@pytest.mark.parametrize("plant, expect", [
    # data -> api -> data: a cycle, and data imports upwards
    ("generator/data/market.py", "cycle"),
    # pose geometry importing the Market-1501 layer above it
    ("generator/pose.py", "upward"),
    # an import hidden inside a function
    ("generator/pose.py", "inside"),
])
def test_checks_fail_on_planted_defects(tmp_path, plant, expect):
    _copy_packages(tmp_path)
    path = tmp_path / plant
    text = path.read_text()
    if expect == "cycle":
        text += "\nfrom generator.api import DisentangledModel  # noqa\n"
    elif expect == "upward":
        text += "\nfrom generator.data.market import parse_name  # noqa\n"
    else:
        text += "\n\ndef _planted():\n    import json\n\n    return json\n"
    path.write_text(text)
    graph, inside = import_graph(tmp_path)
    if expect == "cycle":
        assert find_cycle(graph) is not None
        assert upward_imports(graph)
    elif expect == "upward":
        assert find_cycle(graph) is None
        assert upward_imports(graph) == ["generator.pose (layer 1) imports generator.data.market (layer 2)"]
    else:
        assert inside == ["generator.pose:" + str(len(text.splitlines()) - 2) + ": in-function import of json"]


def test_every_package_is_in_the_distribution():
    """pyproject's package list finds every folder of modules, so an installed wheel imports as the checkout does."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = conf["packages"]["find"]["include"]
    for pkg in PACKAGES:
        for init in (ROOT / pkg).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert any(fnmatch.fnmatch(name, pat) for pat in include), f"{name} is left out of the distribution"
    assert (ROOT / "augment" / "gallery" / "static").is_dir() and conf["package-data"]["augment.gallery"]
