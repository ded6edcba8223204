"""The package's import graph has no circle (issue 16): every ``import`` statement of every module of
``xaibench/`` counts, at module level or inside a function, so a cycle cannot hide behind a lazy import.

``from PKG import NAME`` is an edge to ``PKG.NAME`` when that is a module, else to ``PKG`` itself.  A package
``__init__`` that imports its submodules dynamically (``importlib.import_module`` over ``pkgutil.iter_modules``,
the registries' plugin loading) has an edge to each of them.
"""

import ast
from pathlib import Path

import xaibench

ROOT = Path(xaibench.__file__).parent


def _modules():
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _edges(mods):
    edges = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        pkg = name if is_pkg else name.rsplit(".", 1)[0]
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        if is_pkg and "import_module" in text:  # plugin loading: the package imports every submodule
            edges[name] |= {m for m in mods if m.rsplit(".", 1)[0] == name}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = []
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    targets.append(sub if sub in mods else src)
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:  # import a.b.c of a module a.b
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != name:
                    edges[name].add(t)
    return edges


def _cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
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

    import sys

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    mods = _modules()
    assert len(mods) > 30
    cycles = _cycles(_edges(mods))
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_finds_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_analysis_never_imports_the_runner():
    edges = _edges(_modules())
    for m, targets in edges.items():
        if m.startswith("xaibench.analysis"):
            assert not any(t.startswith("xaibench.run") for t in targets), (m, targets)
