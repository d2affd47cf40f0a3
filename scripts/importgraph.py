"""The import graph of pingr/: cycles, imports hidden inside functions, imports after code.

    python scripts/importgraph.py            # summary; exit 1 when there is a cycle
    python scripts/importgraph.py --edges    # every module-level edge

Module-level imports count (what runs at import time); imports under `if TYPE_CHECKING:` do not
(they never run). Imports inside functions are listed apart: one that points back up the layers
is a cycle dodged, not removed. `import a.b.c` also imports the packages `a` and `a.b`, so an
edge to a submodule is an edge to its parent packages too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pingr"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool,
             known: set[str]) -> list[str]:
    """The pingr modules an import statement loads (parents included)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = here.split(".") if is_pkg else here.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        names = [base]
        # `from pkg import sub` loads the submodule when `sub` is one.
        names += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    out = []
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in known and prefix != here:
                out.append(prefix)
    return out


def scan() -> tuple[dict[str, set[str]], list[tuple[str, int, str]], list[tuple[str, int]]]:
    """(module-level edges, imports inside functions, imports after other code)."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    edges: dict[str, set[str]] = {m: set() for m in files}
    inner: list[tuple[str, int, str]] = []
    late: list[tuple[str, int]] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_pkg = path.name == "__init__.py"

        def visit(body: list[ast.stmt], top: bool, mod: str = mod, is_pkg: bool = is_pkg) -> None:
            code_seen = False
            for node in body:
                if isinstance(node, ast.If) and _is_type_checking(node):
                    continue
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found = _targets(node, mod, is_pkg, known)
                    if top:
                        edges[mod].update(found)
                        if code_seen and found:
                            late.append((mod, node.lineno))
                    else:
                        # One entry per imported module, not per parent package it loads.
                        deepest = [t for t in found
                                   if not any(o.startswith(t + ".") for o in found)]
                        inner.extend((mod, node.lineno, t) for t in deepest)
                    continue
                is_doc = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                          and isinstance(node.value.value, str))
                if top and not is_doc:
                    code_seen = True
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        # Statements nested in if/try at module level still run at import.
                        # ...but not those inside functions (class bodies run at import).
                        nested_top = top and not isinstance(
                            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                        visit([child], nested_top)

        visit(tree.body, True)
    return edges, inner, late


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def main() -> int:
    edges, inner, late = scan()
    found = cycles(edges)
    runtime = {m: set(e) for m, e in edges.items()}
    for mod, _line, dst in inner:
        runtime[mod].add(dst)
    hidden = cycles(runtime)
    if "--edges" in sys.argv:
        for mod in sorted(edges):
            for dst in sorted(edges[mod]):
                print(f"{mod} -> {dst}")
    print(f"modules: {len(edges)}; module-level edges: {sum(map(len, edges.values()))}")
    print(f"cycles (strongly connected groups of modules): {len(found)}; "
          f"modules in them: {sum(map(len, found))}")
    for comp in found:
        print(f"  cycle of {len(comp)}: {', '.join(comp)}")
    print(f"imports of pingr modules inside functions: {len(inner)}")
    for mod, line, dst in inner:
        print(f"  {mod}:{line} -> {dst}")
    print(f"cycles counting the imports inside functions too: {len(hidden)}; "
          f"modules in them: {sum(map(len, hidden))}")
    for comp in hidden:
        print(f"  cycle of {len(comp)}: {', '.join(comp)}")
    print(f"module-level imports after code: {len(late)}")
    for mod, line in late:
        print(f"  {mod}:{line}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
