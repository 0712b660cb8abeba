"""Layering: the import graph among ``ssl_jax`` modules has no cycles and no private imports.

Every module under ``ssl_jax/`` is parsed with :mod:`ast`; every ``import`` counts, including the
ones inside functions (a lazy import still makes the two modules depend on each other; it only
hides the cycle from the interpreter). Edges are resolved to modules: ``from ssl_jax.x import y``
is an edge to ``ssl_jax.x.y`` when that is a module, else to ``ssl_jax.x``; a package's
``__init__.py`` is the package's module. Dynamic imports (``importlib.import_module`` in the
method and model registries) are by design and not part of the graph.

Rules (see DESIGN.md, "Layers"):

* no import cycles: the failure names one cycle of each strongly connected component;
* no module takes a private name (``_name``) of another module, by ``from m import _name`` or by
  ``m._name`` on an imported module;
* a private module (``ssl_jax.losses._utils``) is imported only from inside its own package.
"""

from __future__ import annotations

import ast
import pathlib
from typing import NamedTuple

import pytest

import ssl_jax

ROOT = pathlib.Path(ssl_jax.__file__).parent


class Imports(NamedTuple):
  """The import graph of a package: ``edges[m]`` the modules ``m`` imports, and private uses."""
  modules: frozenset[str]
  edges: dict[str, set[str]]
  private_names: list[str]  # "importer: imported._name" (line)
  private_modules: list[str]  # "importer: ssl_jax.pkg._mod" (line)


def module_names(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
  """Dotted module name -> file for every ``.py`` under ``root`` (``__init__`` -> the package)."""
  names = {}
  for path in sorted(root.rglob("*.py")):
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
      parts.pop()
    names[".".join(parts)] = path
  return names


def _is_private(part: str) -> bool:
  return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _containing_module(name: str, modules: frozenset[str]) -> str | None:
  """The longest prefix of dotted ``name`` that is a module (None outside the package)."""
  parts = name.split(".")
  for end in range(len(parts), 0, -1):
    if ".".join(parts[:end]) in modules:
      return ".".join(parts[:end])
  return None


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
  base = importer.split(".") if is_package else importer.split(".")[:-1]
  base = base[:len(base) - (level - 1)]
  return ".".join(base + ([module] if module else []))


def build_imports(root: pathlib.Path, package: str) -> Imports:
  """Parses every module under ``root`` (the directory of ``package``) into an :class:`Imports`."""
  files = module_names(root, package)
  modules = frozenset(files)
  edges = {m: set() for m in modules}
  private_names, private_modules = [], set()

  def add_edge(importer, target, lineno):
    if target is None or target == importer:
      return
    edges[importer].add(target)
    private = [i for i, part in enumerate(target.split(".")) if _is_private(part)]
    if private:  # importable only from inside the package that holds the private part
      owner = ".".join(target.split(".")[:private[0]])
      if not (importer == owner or importer.startswith(owner + ".")):
        private_modules.add(f"{importer}: {target} (line {lineno})")

  for importer, path in files.items():
    is_package = path.name == "__init__.py"
    aliases = {}  # local name -> imported ssl_jax module, for ``alias._name`` uses
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          target = _containing_module(alias.name, modules)
          add_edge(importer, target, node.lineno)
          if target is not None and alias.asname:
            aliases[alias.asname] = target
      elif isinstance(node, ast.ImportFrom):
        source = (_resolve_relative(importer, is_package, node.level, node.module) if node.level
                  else node.module)
        if source != package and not source.startswith(package + "."):
          continue
        for alias in node.names:
          full = f"{source}.{alias.name}"
          if full in modules:
            add_edge(importer, full, node.lineno)
            aliases[alias.asname or alias.name] = full
            continue
          target = _containing_module(source, modules)
          add_edge(importer, target, node.lineno)
          if _is_private(alias.name):
            private_names.append(f"{importer}: {source}.{alias.name} (line {node.lineno})")
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and _is_private(node.attr)
          and isinstance(node.value, ast.Name) and node.value.id in aliases
          and aliases[node.value.id] != importer):
        private_names.append(
            f"{importer}: {aliases[node.value.id]}.{node.attr} (line {node.lineno})")
  return Imports(modules, edges, private_names, sorted(private_modules))


def find_cycles(edges: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
  """``(cycle, component)`` per strongly connected component with a cycle (Tarjan).

  ``cycle`` is a shortest cycle ``[a, b, ..., a]`` through the component's first module, and
  ``component`` all the modules that lie on some cycle with it (each must be broken).
  """
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def connect(v):  # recursion depth is bounded by the number of modules (~100)
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
        if w == v:
          break
      components.append(component)

  for v in sorted(edges):
    if v not in index:
      connect(v)
  cycles = []
  for component in components:
    start = min(component)
    if len(component) == 1 and start not in edges.get(start, ()):
      continue
    # Shortest path back to ``start`` inside the component (breadth first).
    parent, frontier = {}, [start]
    while start not in parent:
      nxt = []
      for v in frontier:
        for w in sorted(edges[v] & component):
          if w not in parent:
            parent[w] = v
            nxt.append(w)
      frontier = nxt
    path, v = [start], parent[start]
    while v != start:
      path.append(v)
      v = parent[v]
    cycles.append(([start, *reversed(path)], sorted(component)))
  return sorted(cycles)


@pytest.fixture(scope="module")
def imports():
  return build_imports(ROOT, "ssl_jax")


def test_graph_sees_top_level_and_lazy_imports(imports):
  """Guards against a vacuous pass: known edges, one of them a function-level import."""
  assert "ssl_jax.losses" in imports.modules and "ssl_jax.cli" in imports.modules
  assert "ssl_jax.losses.contrastive" in imports.edges["ssl_jax.losses"]  # package __init__
  assert "ssl_jax.train.loop" in imports.edges["ssl_jax.cli"]  # imported inside main()
  assert sum(len(e) for e in imports.edges.values()) > 100


def test_no_import_cycles(imports):
  cycles = find_cycles(imports.edges)
  assert not cycles, "import cycles among ssl_jax modules:\n" + "\n".join(
      f"{' -> '.join(cycle)}\n  (the whole cycle set: {', '.join(component)})"
      for cycle, component in cycles)


def test_no_private_names_from_other_modules(imports):
  assert not imports.private_names, (
      "modules using another module's private (_name) names:\n" + "\n".join(imports.private_names))


def test_private_modules_stay_inside_their_package(imports):
  assert not imports.private_modules, (
      "private modules imported from outside their package:\n" + "\n".join(imports.private_modules))


def test_checker_finds_planted_violations(tmp_path):
  """Negative control on a small package with one of each violation."""
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("from pkg.sub import _hidden\n")
  (pkg / "sub" / "_hidden.py").write_text("def _secret(): pass\n")
  (pkg / "a.py").write_text("def f():\n  from pkg import b\n")  # lazy import, still an edge
  (pkg / "b.py").write_text("from . import c\nfrom pkg.sub._hidden import _secret\n")
  (pkg / "c.py").write_text("import pkg.a as a_mod\nfrom pkg.sub import _hidden\n"
                            "x = a_mod._f\n")
  found = build_imports(pkg, "pkg")
  assert find_cycles(found.edges) == [(["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
                                       ["pkg.a", "pkg.b", "pkg.c"])]
  assert found.private_names == ["pkg.b: pkg.sub._hidden._secret (line 2)",
                                 "pkg.c: pkg.a._f (line 3)"]
  assert found.private_modules == ["pkg.b: pkg.sub._hidden (line 2)",
                                   "pkg.c: pkg.sub._hidden (line 2)"]
