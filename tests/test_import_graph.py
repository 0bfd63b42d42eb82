"""The import graph of ``src/movierec`` has no cycles, function-local imports included.

Every ``.py`` under ``src/movierec`` is parsed with :mod:`ast`; every ``import`` and
``from ... import`` of a movierec module is an edge, wherever it stands: at module level, in a
function or method, in a ``try`` or an ``if``. An import placed inside a function to dodge a
cycle is still a cycle: the two modules still need each other.

Resolution:

* relative imports are resolved against the importing module's package;
* ``from movierec.pkg import name`` imports ``movierec.pkg.name`` when that is a module,
  else ``movierec.pkg`` (its ``__init__``);
* ``import movierec.pkg`` (or ``from movierec.pkg import <not a module>``) imports the
  package's ``__init__``;
* ``importlib.import_module("movierec....")`` with a literal name counts as an import.

Left out, on purpose:

* imports under ``if TYPE_CHECKING:`` (they never run; they are annotations only);
* the implicit import of a module's parent packages by Python (``movierec.cli.recommend``
  loads ``movierec/cli/__init__.py`` first). A package ``__init__`` that imports its
  submodules to register them is the ordinary package form; it is a cycle only when a
  submodule names the package itself (``from movierec.cli import main``), which does count.

A cycle is any strongly connected component of more than one module, or a module importing
itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "movierec"


def _modules() -> dict[str, Path]:
    """Module name -> file, for every .py under src/movierec (packages by their __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom / import_module("...") in the tree, skipping the bodies of
    ``if TYPE_CHECKING:`` (their ``else`` runs and is kept)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            yield ast.Import(names=[ast.alias(name=node.args[0].value)])
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    def nearest(name: str) -> str | None:
        # the module itself, or the nearest enclosing package that exists
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    out = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                out.add(nearest(alias.name))
        return out
    if node.level:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    if not (source == PACKAGE or source.startswith(PACKAGE + ".")):
        return out
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        out.add(sub if sub in known else nearest(source))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the movierec modules it imports (anywhere in its code)."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_nodes(tree):
            graph[mod] |= {t for t in _targets(node, mod, path.name == "__init__.py", known) if t}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module, and the
    modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in graph[v]:
                        out.append(sorted(comp))
    return out


def _describe(comp: list[str], graph: dict[str, set[str]]) -> str:
    members = set(comp)
    edges = [f"    {a} -> {b}" for a in comp for b in sorted(graph[a]) if b in members]
    return "  cycle among " + ", ".join(comp) + ":\n" + "\n".join(edges)


def test_graph_is_real():
    """The walk found the package: a cycle test over an empty graph would pass vacuously."""
    graph = import_graph()
    assert len(graph) > 30, sorted(graph)
    assert "movierec.pipeline" in graph["movierec.cli.stages"] | graph["movierec.cli.models"] | set().union(
        *(graph[m] for m in graph if m.startswith("movierec.cli."))), "no cli -> pipeline edge found"
    assert "movierec.config" in graph["movierec.pipeline"]
    assert sum(len(v) for v in graph.values()) > 100


def test_function_local_imports_are_seen():
    """A movierec import inside a function body is an edge (pipeline imports its stages lazily)."""
    graph = import_graph()
    assert "movierec.stages.clean" in graph["movierec.pipeline"]


def test_no_import_cycles():
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles in src/movierec:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_detector_finds_cycles():
    """The cycle search itself: a two-module cycle, a longer one, and a self-import are found;
    a diamond is not a cycle."""
    g = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"f"},
         "w": {"x", "y"}, "x": {"z"}, "y": {"z"}, "z": set()}
    assert sorted(strongly_connected(g)) == [["a", "b"], ["c", "d", "e"], ["f"]]


def test_resolution():
    """Relative imports, ``from pkg import submodule``, and imports under TYPE_CHECKING."""
    known = {"movierec", "movierec.a", "movierec.a.b", "movierec.a.c", "movierec.d"}

    def targets(src: str, module: str, is_package: bool = False) -> set[str]:
        out = set()
        for node in _import_nodes(ast.parse(src)):
            out |= _targets(node, module, is_package, known)
        return out

    assert targets("from . import c", "movierec.a.b") == {"movierec.a.c"}
    assert targets("from .c import f", "movierec.a.b") == {"movierec.a.c"}
    assert targets("from .. import d", "movierec.a.b") == {"movierec.d"}
    assert targets("from .b import x", "movierec.a", is_package=True) == {"movierec.a.b"}
    assert targets("from movierec.a import b, name", "movierec.d") == {"movierec.a.b", "movierec.a"}
    assert targets("import movierec.a.b as m", "movierec.d") == {"movierec.a.b"}
    assert targets("def f():\n    from movierec import d\n", "movierec.a.b") == {"movierec.d"}
    assert targets("if TYPE_CHECKING:\n    from movierec import d\nelse:\n    import movierec.a.c\n",
                   "movierec.a.b") == {"movierec.a.c"}
    assert targets("import numpy\nfrom os import path\n", "movierec.d") == set()


def test_version_has_one_value():
    """movierec._version holds the version for modules that must not import the package's
    ``__init__`` (catalog: the __init__ reaches the service, which reaches the catalog)."""
    import movierec
    import movierec._version

    assert movierec.__version__ == movierec._version.__version__
