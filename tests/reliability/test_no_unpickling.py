"""Nothing in the library unpickles or executes strings: a walk over the package's syntax trees."""

import ast
import os

import ssl_jax

FORBIDDEN_MODULES = {"pickle", "dill", "cloudpickle", "cPickle", "_pickle", "marshal", "shelve"}
FORBIDDEN_BUILTINS = {"eval", "exec"}


def _violations(path):
  tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [f"import {a.name}" for a in node.names
                if a.name.split(".")[0] in FORBIDDEN_MODULES]
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module.split(".")[0] in FORBIDDEN_MODULES:
        found.append(f"from {node.module} import ...")
    elif isinstance(node, ast.Call):
      f = node.func
      if isinstance(f, ast.Name) and f.id in FORBIDDEN_BUILTINS:
        found.append(f"{f.id}(...)")
      if (isinstance(f, ast.Attribute) and f.attr in ("load", "load_all", "unsafe_load")
          and isinstance(f.value, ast.Name) and f.value.id == "yaml"):
        found.append(f"yaml.{f.attr}(...)")
      if (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
          and f.value.id in ("np", "numpy")):
        allow = [k for k in node.keywords if k.arg == "allow_pickle"]
        if not allow or not (isinstance(allow[0].value, ast.Constant) and
                             allow[0].value.value is False):
          found.append("np.load without allow_pickle=False")
  return [f"{os.path.relpath(path)}:{v}" for v in found]


def test_package_never_unpickles_or_evals():
  root = os.path.dirname(ssl_jax.__file__)
  files = [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if f.endswith(".py")]
  assert len(files) > 20
  violations = [v for path in files for v in _violations(path)]
  assert violations == []


def test_the_walker_catches_what_it_looks_for(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("import pickle\nfrom dill import loads\nimport yaml\nyaml.load(s)\n"
                 "eval('1')\nexec('x=1')\nimport numpy as np\nnp.load('f.npz')\n")
  assert len(_violations(str(bad))) == 6  # all but the harmless "import yaml"
