"""How far a reader travels from one command into the code: the project functions a command's handler reaches by
static calls, the files they live in, and the calls that cross from one package to another.

    python benchmarks/call_trace.py reference-reid        # `vmarket reference-reid`: the reference re-ID ablation
    python benchmarks/call_trace.py reid --root OTHER_CHECKOUT

A package is a folder of modules (``augment/jobs``, ``reid``, ``generator/data``; a top-level module such as
``generator/io.py`` counts as its folder's). Calls are resolved statically: ``f()`` and ``module.f()`` through the
module's imports, ``Class()`` to the class's methods, ``self.m()`` within the class; calls on other objects are not
followed, so the counts are a lower bound, the same for any checkout.
"""
from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

PACKAGES = ("generator", "augment", "reid")


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (root / pkg).rglob("*.py"):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


def _graph(root: Path):
    """({qualified function: {callees}}, {qualified function: file})."""
    mods = _modules(root)
    defs, where, edges = _defs(root), {}, defaultdict(set)
    trees = {m: ast.parse(p.read_text()) for m, p in mods.items()}
    for q in defs:  # a function's module, or a method's (module.Class.method)
        where[q] = mods[q.rsplit(".", 1)[0] if q.rsplit(".", 1)[0] in mods else q.rsplit(".", 2)[0]]
    classes = defaultdict(list)
    for q in defs:
        owner = q.rsplit(".", 1)[0]
        if owner not in mods:
            classes[owner].append(q)
    for m, tree in trees.items():
        names = {}  # local name -> qualified project name (module, function or class)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = f"{m}.{node.name}"

        def resolve(target: str) -> list[str]:
            if target in defs:
                return [target]
            return list(classes.get(target, []))

        for q, fn in defs.items():
            if not q.startswith(m + ".") or q.rsplit(".", 2)[0] not in (m,) and q.rsplit(".", 1)[0] not in (m,):
                continue
            cls = q.rsplit(".", 1)[0] if q.rsplit(".", 1)[0] != m else None
            for call in ast.walk(fn):
                if not isinstance(call, ast.Call):
                    continue
                f, target = call.func, None
                if isinstance(f, ast.Name) and f.id in names:
                    target = names[f.id]
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    if f.value.id == "self" and cls:
                        target = f"{cls}.{f.attr}"
                    elif f.value.id in names:
                        target = f"{names[f.value.id]}.{f.attr}"
                if target:
                    edges[q].update(resolve(target))
    return edges, where


def _names_in(node) -> set[str]:
    """The config's names an expression carries on: itself, one of its sections or values (``cfg``,
    ``cfg.train``, ``cfg.recipes[0]``), or a call of ``load_config`` (the config itself, made)."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "load_config":
        return {"load_config"}
    return {node.id} if isinstance(node, ast.Name) else set()


def _params(fn) -> list[str]:
    return [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]


def flow(root: Path, start: str, tracked: set[str]) -> dict:
    """Follow the config from the call of ``load_config`` in ``start`` (and the names in ``tracked``): every call that
    passes it, a section or a value of it on to a project function; in the callee, the parameters that receive them
    are followed in turn. Counts the files those functions live in and the calls that cross packages."""
    edges, where = _graph(root)
    defs = _defs(root)
    seen: dict[str, set[str]] = {}
    hops, files = 0, set()
    todo = [(start, frozenset(tracked))]
    while todo:
        q, names = todo.pop()
        if names <= seen.get(q, set()):
            continue
        seen[q] = seen.get(q, set()) | names
        fn, live = defs[q], set(names) | {"load_config"}
        files.add(where[q])
        for node in ast.walk(fn):  # values computed from a followed one are followed too
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None \
                    and _names_in(node.value) & live:
                for tgt in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    live |= _names_in(tgt)
            elif isinstance(node, (ast.For, ast.comprehension)) and _names_in(node.iter) & live:
                live |= _names_in(node.target)
        for call in ast.walk(fn):
            if not isinstance(call, ast.Call):
                continue
            passed = [i for i, a in enumerate(call.args) if _names_in(a) & live]
            kw = {k.arg for k in call.keywords if k.arg and _names_in(k.value) & live}
            if not passed and not kw:
                continue
            for callee in edges.get(q, ()):
                cfn = defs[callee]
                if not _called_by(call, callee):
                    continue
                params = _params(cfn)
                offset = 1 if params[:1] == ["self"] and "." in callee.split(".", 2)[-1] else 0
                got = {params[i + offset] for i in passed if i + offset < len(params)} | (kw & set(params))
                if got:
                    if package_of(where[q], root) != package_of(where[callee], root):
                        hops += 1
                    todo.append((callee, frozenset(got)))
    return {"functions": len(seen), "files": len(files), "packages": len({package_of(f, root) for f in files}),
            "package_hops": hops}


def _called_by(call: ast.Call, callee: str) -> bool:
    f = call.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    parts = callee.split(".")
    return name in (parts[-1], parts[-2]) or (parts[-1] in ("__init__", "__post_init__") and name == parts[-2])


def _defs(root: Path) -> dict:
    out = {}
    for m, p in _modules(root).items():
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{m}.{node.name}"] = node
            elif isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        out[f"{m}.{node.name}.{sub.name}"] = sub
    return out


def package_of(path: Path, root: Path) -> str:
    return path.relative_to(root).parent.as_posix()


def trace(root: Path, start: str) -> dict:
    edges, where = _graph(root)
    seen, todo = {start}, [start]
    while todo:
        q = todo.pop()
        for c in edges.get(q, ()):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    files = {where[q] for q in seen}
    hops = [(a, b) for a in seen for b in edges.get(a, ()) if package_of(where[a], root) != package_of(where[b], root)]
    return {"functions": len(seen), "files": len(files), "packages": len({package_of(f, root) for f in files}),
            "package_hops": len(hops)}


HANDLERS = {  # the handler of each command, in the layouts this script knows
    "reference-reid": ("augment.cli.job_commands._cmd_reference_reid", "augment.cli._cmd_reference_reid"),
    "reid": ("augment.cli.job_commands._cmd_reid", "augment.cli._cmd_reid"),
    "build": ("augment.cli.data_commands._cmd_build", "augment.cli._cmd_build"),
    "pipeline": ("augment.cli.job_commands._cmd_pipeline", "augment.cli._cmd_pipeline"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=sorted(HANDLERS))
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="a checkout of the project")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    edges, _ = _graph(root)
    start = next(h for h in HANDLERS[args.command] if h in edges)
    r = trace(root, start)
    print(f"{args.command} ({start}): reaches {r['functions']} functions in {r['files']} files of {r['packages']} "
          f"packages, {r['package_hops']} calls between packages")
    r = flow(root, start, {"load_config"})
    print(f"  its config passes through {r['functions']} functions in {r['files']} files of {r['packages']} packages, "
          f"{r['package_hops']} calls between packages")


if __name__ == "__main__":
    main()
