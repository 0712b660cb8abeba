"""Text corpora by name and the docstring downstream task, all offline.

Corpora (:func:`load_corpus`; each split is a :class:`TextCorpus`: a list of documents, their
total size and a content hash):

* ``pydoc``: the interactive-help texts of ``pydoc_data.topics.topics`` (the text behind
  ``help("FORMATTING")`` etc.), one document per topic (79 topics, 78 distinct texts, about 465k
  characters of English technical prose on CPython 3.11). Identical texts are kept once, under
  their alphabetically first topic.
* ``pystdlib``: the docstrings of the standard library's modules, classes and functions (methods and
  nested definitions included), extracted with :mod:`ast` from the ``.py`` files under
  ``sysconfig.get_paths()["stdlib"]`` without importing them, cleaned with ``inspect.cleandoc``
  (what ``ast.get_docstring(clean=True)`` does) and stripped. One document per distinct docstring
  of at least :data:`MIN_DOCSTRING_CHARS` (40) characters, keyed by the alphabetically first
  dotted name it documents (``email.message.Message.get_payload``). Left out: ``site-packages``,
  test packages (folders named ``test``, ``tests``, ``idle_test``; files ``test_*.py``) and folders
  that are not Python package names (``lib-dynload``, ``config-3.11-...``). About 7000 documents
  and 1.7M characters on CPython 3.11; the exact size depends on the Python build, so it is
  recorded (``num_chars``, ``sha256``), never assumed. The extraction (about 10 s) is cached under
  ``$SSL_JAX_CACHE`` (default ``~/.cache/ssl_jax``), keyed by the Python version and every source
  file's path, size and modification time.
* ``text:<path-or-glob>``: UTF-8 text files: a folder (every non-hidden file under it), a file, or
  a glob (``**`` allowed). Documents are blocks separated by blank lines, the format of BERT's
  ``create_pretraining_data`` (one document per block, e.g. one paragraph or one article per
  block; a file without blank lines is one document).
* ``tfds:<name>[:<config>]``: a TFDS text dataset prepared as ArrayRecord, read through
  ``tfds.data_source`` (no TensorFlow, nothing downloaded), one document per record from the
  ``text_key`` feature (bytes decoded as UTF-8). Split strings are TFDS's (``"train"``,
  ``"test"``, ``"train[:1%]"``). Builders of the TFDS catalog that ``tensorflow_datasets`` does not
  register on import (``wikipedia``, ``c4``, ...) are imported from ``tensorflow_datasets.text``
  on demand; a custom builder's module must be imported by the caller first.

Splits of ``pydoc``, ``pystdlib`` and ``text:`` are ``train`` / ``validation`` / ``test``, about
90 / 5 / 5 % of the documents by a stable hash: a document goes to the split of
``int(sha256(key)[:16 hex], 16) % 100`` (< 90: train, < 95: validation, else test), where the key
is the topic name for ``pydoc`` and the document's text for ``pystdlib`` and ``text:``. So a
document keeps its split when others are added or removed. ``pystdlib``'s ``train`` split
additionally leaves out every docstring of the docstring task's ``test`` split (below), so
pretraining never sees the texts the downstream task is scored on. Documents keep their key order
within a split.

The docstring task (:func:`docstring_task`): classify a ``pystdlib`` docstring by the top-level
standard-library package it comes from. Candidates are :data:`DOCSTRING_TASK_PACKAGES`; a package
is a class when it has at least ``min_per_class`` (default 40) task docstrings in this Python build
(on CPython 3.11: 14 classes, see the README). Every package name and every module or sub-package
name under a candidate package is removed from every task text (case-insensitive, whole words,
dotted paths as one: ``email.mime.text.MIMEText`` -> ``MIMEText``), texts left shorter than 20
characters are dropped, and texts that become identical are kept once (dropped when their labels
differ). Splits: ``train`` / ``test`` stratified 70 / 30 (``train_test_split(random_state=0)``),
``fit`` / ``val`` split ``train`` again 80 / 20 (``random_state=1``) for tuning.

SimCSE retrieval pairs (:func:`docstring_halves`): ``pystdlib`` docstrings of a split with at least
:data:`MIN_HALVES_WORDS` (20) words, cut at the whitespace nearest to the middle character.
"""

from __future__ import annotations

import ast
import functools
import glob
import hashlib
import importlib
import json
import os
import pathlib
import re
import sys
import sysconfig
from typing import Any, NamedTuple, Sequence

import numpy as np

from ssl_jax.data.sources import not_prepared_error

TEXT_CORPORA = ("pydoc", "pystdlib", "text:<path-or-glob>", "tfds:<name>[:<config>]")
"""Valid corpus names for :func:`load_corpus`."""

SPLITS = ("train", "validation", "test")
MIN_DOCSTRING_CHARS = 40
MIN_HALVES_WORDS = 20
MIN_TASK_CHARS = 20
DEFAULT_MIN_PER_CLASS = 40
DOCSTRING_TASK_PACKAGES = (
    "asyncio", "collections", "concurrent", "ctypes", "email", "http", "idlelib", "importlib",
    "json", "logging", "multiprocessing", "sqlite3", "tkinter", "unittest", "urllib", "wsgiref",
    "xml", "xmlrpc")
"""Candidate classes of the docstring task (kept when they have ``min_per_class`` docstrings)."""

_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                            "__pycache__"})
_CACHE_VERSION = 1


class TextCorpus(NamedTuple):
  """One split of a corpus.

  Attributes:
    name: Corpus name (``"pydoc"``, ``"text:/data/*.txt"``, ...).
    split: Split name.
    documents: The documents, in a fixed order.
    sha256: Hex SHA-256 over the documents (each as its UTF-8 length, ``:``, its UTF-8 bytes).
    num_chars: Total characters.
  """
  name: str
  split: str
  documents: list[str]
  sha256: str
  num_chars: int


def documents_sha256(documents: Sequence[str]) -> str:
  """Hex SHA-256 of ``documents`` (each as its UTF-8 byte length, ``:``, its UTF-8 bytes)."""
  h = hashlib.sha256()
  for doc in documents:
    b = doc.encode("utf-8")
    h.update(f"{len(b)}:".encode())
    h.update(b)
  return h.hexdigest()


def _corpus(name: str, split: str, documents: list[str]) -> TextCorpus:
  return TextCorpus(name, split, documents, documents_sha256(documents),
                    sum(len(d) for d in documents))


def split_of(key: str) -> str:
  """The split (``train`` / ``validation`` / ``test``, 90 / 5 / 5 %) of a document key."""
  bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) % 100
  return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _check_split(name: str, split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"{name}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


# --------------------------------------------------------------------------------------- pydoc


@functools.lru_cache(maxsize=1)
def _pydoc_documents() -> tuple[tuple[str, str], ...]:
  from pydoc_data.topics import topics  # pylint: disable=import-outside-toplevel

  seen: dict[str, str] = {}
  for topic in sorted(topics):
    seen.setdefault(topics[topic], topic)
  return tuple(sorted((topic, text) for text, topic in seen.items()))


def _pydoc(split: str) -> TextCorpus:
  _check_split("pydoc", split)
  return _corpus("pydoc", split, [t for k, t in _pydoc_documents() if split_of(k) == split])


# ------------------------------------------------------------------------------------ pystdlib


def _stdlib_root() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: pathlib.Path) -> list[tuple[str, ...]]:
  """Module paths (tuples of names) of the standard library's ``.py`` files, sorted."""
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    rel = pathlib.Path(dirpath).relative_to(root)
    parts = rel.parts
    dirnames[:] = sorted(d for d in dirnames
                         if d not in _EXCLUDED_DIRS and d.isidentifier() and not d.startswith("."))
    for fname in sorted(filenames):
      stem, ext = os.path.splitext(fname)
      if ext == ".py" and stem.isidentifier() and not stem.startswith("test_"):
        files.append((*parts, stem))
  return sorted(files)


def _docstrings(tree: ast.Module, module: str) -> list[tuple[str, str]]:
  """``(dotted name, cleaned docstring)`` of a module and every class / function in it."""
  out = []
  text = ast.get_docstring(tree, clean=True)
  if text:
    out.append((module, text))
  stack = [(tree, module)]
  while stack:
    node, prefix = stack.pop()
    for child in _direct_definitions(node):
      name = f"{prefix}.{child.name}"
      text = ast.get_docstring(child, clean=True)
      if text:
        out.append((name, text))
      stack.append((child, name))
  return out


def _direct_definitions(node: ast.AST) -> list[Any]:
  """Class / function definitions in ``node``'s body, also inside if / try / with blocks."""
  defs = []
  todo = list(ast.iter_child_nodes(node))
  while todo:
    child = todo.pop(0)
    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      defs.append(child)
    elif isinstance(child, (ast.If, ast.Try, ast.With, ast.AsyncWith, ast.For, ast.While,
                            ast.ExceptHandler)) or type(child).__name__ == "TryStar":
      todo.extend(ast.iter_child_nodes(child))
  return defs


def _cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("SSL_JAX_CACHE", "~/.cache/ssl_jax")).expanduser()


@functools.lru_cache(maxsize=1)
def _stdlib_extraction() -> dict[str, Any]:
  """``{"modules": [...], "docstrings": [[name, text], ...]}`` of the stdlib (cached on disk)."""
  root = _stdlib_root()
  files = _stdlib_files(root)
  key = hashlib.sha256()
  key.update(f"{_CACHE_VERSION}|{sys.version}|{root}".encode())
  for parts in files:
    path = root.joinpath(*parts[:-1], parts[-1] + ".py")
    st = path.stat()
    key.update(f"|{path}:{st.st_size}:{st.st_mtime_ns}".encode())
  cache = _cache_dir() / f"pystdlib-{key.hexdigest()[:24]}.json"
  try:
    with open(cache, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    pass
  docstrings = []
  for parts in files:
    path = root.joinpath(*parts[:-1], parts[-1] + ".py")
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
      tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):  # Files kept for other Python versions, templates.
      continue
    docstrings.extend([name, text] for name, text in _docstrings(tree, module))
  result = {"modules": [".".join(p) for p in files], "docstrings": docstrings}
  try:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(result, f)
    os.replace(tmp, cache)
  except OSError:
    pass
  return result


@functools.lru_cache(maxsize=1)
def _pystdlib_documents() -> tuple[tuple[str, str], ...]:
  """``(dotted name, docstring)`` of every distinct docstring, sorted by name."""
  first: dict[str, str] = {}
  for name, text in _stdlib_extraction()["docstrings"]:
    text = text.strip()
    if len(text) >= MIN_DOCSTRING_CHARS and (text not in first or name < first[text]):
      first[text] = name
  return tuple(sorted((name, text) for text, name in first.items()))


def _pystdlib(split: str) -> TextCorpus:
  _check_split("pystdlib", split)
  docs = [t for _, t in _pystdlib_documents() if split_of(t) == split]
  if split == "train":
    held_out = _task_data()["test_raw"]
    docs = [t for t in docs if t not in held_out]
  return _corpus("pystdlib", split, docs)


# ------------------------------------------------------------------------------- docstring task


def _name_pattern(names: Sequence[str]) -> re.Pattern:
  alt = "|".join(re.escape(n) for n in sorted(set(names), key=lambda n: (-len(n), n)))
  # A dotted path of names (with a trailing dot when an attribute follows) and one blank after.
  return re.compile(rf"(?<!\w)(?:{alt})(?:\.(?:{alt}))*(?!\w)(?:\.(?=\w))?[ \t]?", re.IGNORECASE)


def remove_names(text: str, pattern: re.Pattern) -> str:
  """Removes the package / module names matched by ``pattern`` from ``text`` (then strips)."""
  return pattern.sub("", text).strip()


@functools.lru_cache(maxsize=1)
def _task_data() -> dict[str, Any]:
  """Everything the docstring task needs, computed once per process."""
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

  modules = _stdlib_extraction()["modules"]
  names = set(DOCSTRING_TASK_PACKAGES)
  for module in modules:
    parts = module.split(".")
    if parts[0] in DOCSTRING_TASK_PACKAGES:
      names.update(p for p in parts if not (p.startswith("__") and p.endswith("__")))
  pattern = _name_pattern(sorted(names))
  by_text: dict[str, list[tuple[str, str, str]]] = {}  # cleaned -> [(name, raw, package)]
  for name, raw in _pystdlib_documents():
    package = name.split(".")[0]
    if package not in DOCSTRING_TASK_PACKAGES:
      continue
    cleaned = remove_names(raw, pattern)
    if len(cleaned) >= MIN_TASK_CHARS:
      by_text.setdefault(cleaned, []).append((name, raw, package))
  records = []  # (name, cleaned, package, raws)
  for cleaned, group in by_text.items():
    if len({p for _, _, p in group}) == 1:
      name = min(n for n, _, _ in group)
      records.append((name, cleaned, group[0][2], tuple(r for _, r, _ in group)))
  records.sort()
  test = _task_split(records, DEFAULT_MIN_PER_CLASS, train_test_split)["test"]
  return {"records": records, "pattern": pattern, "names": sorted(names),
          "test_raw": frozenset(raw for rec in test for raw in rec[3])}


def _task_split(records: list, min_per_class: int, train_test_split: Any) -> dict[str, list]:
  counts: dict[str, int] = {}
  for rec in records:
    counts[rec[2]] = counts.get(rec[2], 0) + 1
  classes = tuple(p for p in DOCSTRING_TASK_PACKAGES if counts.get(p, 0) >= min_per_class)
  if len(classes) < 2:
    raise ValueError(f"docstring_task: fewer than 2 packages have {min_per_class} docstrings in "
                     f"this Python build; lower min_per_class")
  kept = [rec for rec in records if rec[2] in classes]
  labels = [classes.index(rec[2]) for rec in kept]
  idx = np.arange(len(kept))
  train, test = train_test_split(idx, test_size=0.3, stratify=labels, random_state=0)
  fit, val = train_test_split(train, test_size=0.2, stratify=[labels[i] for i in train],
                              random_state=1)
  out = {s: [kept[i] for i in ix] for s, ix in
         (("train", train), ("test", test), ("fit", fit), ("val", val))}
  out["classes"] = classes
  return out


_TASK_SPLITS = ("train", "test", "fit", "val")


def _task(split: str, min_per_class: int) -> tuple[list[tuple], tuple[str, ...]]:
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

  if split not in _TASK_SPLITS:
    raise ValueError(f"docstring_task: unknown split {split!r}; valid splits: 'train', 'test' "
                     f"and, for tuning inside train, 'fit', 'val'")
  if not isinstance(min_per_class, (int, np.integer)) or min_per_class < 2:
    raise ValueError(f"docstring_task: min_per_class must be an int >= 2, got {min_per_class!r}")
  parts = _task_split(_task_data()["records"], int(min_per_class), train_test_split)
  return parts[split], parts["classes"]


def docstring_task(split: str, *, min_per_class: int = DEFAULT_MIN_PER_CLASS
                   ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
  """The docstring classification task (see the module docstring).

  The held-out ``test`` texts are left out of ``pystdlib``'s ``train`` split for the default
  ``min_per_class``; another value gives another train / test split, not held out of it.

  Args:
    split: ``"train"``, ``"test"``, or ``"fit"`` / ``"val"`` (a split of ``train`` for tuning).
    min_per_class: Candidate packages with fewer task docstrings are not classes.

  Returns:
    ``(texts, labels, class_names)``: texts with package and module names removed, int32 labels
    ``[N]`` indexing ``class_names`` (packages, in :data:`DOCSTRING_TASK_PACKAGES` order).
  """
  records, classes = _task(split, min_per_class)
  labels = np.asarray([classes.index(rec[2]) for rec in records], np.int32)
  return [rec[1] for rec in records], labels, classes


def docstring_task_sources(split: str, *, min_per_class: int = DEFAULT_MIN_PER_CLASS
                           ) -> list[tuple[str, ...]]:
  """The original docstrings behind each text of :func:`docstring_task` (same order).

  Each entry is a tuple: several docstrings can become the same text once names are removed.
  """
  records, _ = _task(split, min_per_class)
  return [rec[3] for rec in records]


def docstring_task_names() -> list[str]:
  """Every package / module name removed from the docstring task's texts."""
  return list(_task_data()["names"])


def docstring_halves(split: str) -> tuple[list[str], list[str]]:
  """First and second halves of the ``pystdlib`` docstrings of ``split`` (SimCSE retrieval).

  Args:
    split: ``"train"``, ``"validation"`` or ``"test"`` (of ``pystdlib``; SimCSE pretrains on
      ``train``, so evaluate on ``validation`` while tuning and ``test`` to report).

  Returns:
    ``(firsts, seconds)``: for every docstring of at least :data:`MIN_HALVES_WORDS` words, the text
    before and after the whitespace nearest to its middle character (both stripped).
  """
  docs = load_corpus("pystdlib", split).documents
  firsts, seconds = [], []
  for doc in docs:
    if len(doc.split()) < MIN_HALVES_WORDS:
      continue
    middle = len(doc) / 2
    cut = min((m.start() for m in re.finditer(r"\s+", doc)), key=lambda i: (abs(i - middle), i))
    firsts.append(doc[:cut].strip())
    seconds.append(doc[cut:].strip())
  return firsts, seconds


# ----------------------------------------------------------------------------------- text files


def _text_files(name: str, spec: str) -> list[pathlib.Path]:
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    files = [p for p in sorted(path.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
  elif path.is_file():
    files = [path]
  else:
    files = [pathlib.Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))
             if os.path.isfile(p)]
  if not files:
    raise FileNotFoundError(f"{name}: no files match {spec!r} (a file, a folder or a glob)")
  return files


def _text(name: str, spec: str, split: str) -> TextCorpus:
  _check_split(name, split)
  if not spec:
    raise ValueError(f"{name}: missing path; use text:<path-or-glob>")
  docs = []
  for path in _text_files(name, spec):
    try:
      content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{name}: {path} is not UTF-8 text: {e}") from e
    for block in re.split(r"\n[ \t\r\f\v]*\n", content.replace("\r\n", "\n")):
      block = block.strip()
      if block and split_of(block) == split:
        docs.append(block)
  return _corpus(name, split, docs)


# ------------------------------------------------------------------------------------------ tfds


def open_tfds(name: str, tfds_name: str, split: str, data_dir: str | None) -> Any:
  """``tfds.data_source`` with clear errors; imports ``tensorflow_datasets.text.<name>`` if needed.

  Raises:
    ValueError: unknown dataset (after trying the import) or split.
    FileNotFoundError: not prepared as ArrayRecord in ``data_dir``.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  def open_it():
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)

  try:
    try:
      return open_it()
    except tfds.core.registered.DatasetNotFoundError:
      base = tfds_name.split("/")[0].split(":")[0]
      try:
        importlib.import_module(f"tensorflow_datasets.text.{base}")
      except ImportError:
        raise ValueError(
            f"{name}: no TFDS dataset named {base!r} is registered (a custom builder's module "
            f"must be imported first; tensorflow_datasets.text.{base} does not exist)") from None
      return open_it()
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"{name}: no TFDS dataset named {tfds_name!r} is registered (import its "
                     f"builder's module first)") from e
  except ValueError as e:
    raise ValueError(f"{name}: cannot read split {split!r}: {e}") from e
  except (NotImplementedError, FileNotFoundError, AssertionError, OSError) as e:
    raise not_prepared_error(name, tfds_name, data_dir, e) from e


def _tfds(name: str, spec: str, split: str, data_dir: str | None, text_key: str) -> TextCorpus:
  if not spec:
    raise ValueError(f"{name}: missing dataset name; use tfds:<name>[:<config>]")
  if "/" in spec:
    tfds_name = spec
  else:
    ds_name, _, config = spec.partition(":")
    tfds_name = f"{ds_name}/{config}" if config else ds_name
  ds = open_tfds(name, tfds_name, split, data_dir)
  features = ds.dataset_info.features
  if text_key not in features:
    raise ValueError(f"{name}: no feature {text_key!r}; features are {sorted(features.keys())} "
                     f"(choose one with text_key=)")
  docs = []
  n = len(ds)
  reader = getattr(ds, "data_source", None)
  batched = "__getitems__" not in getattr(reader, "__dict__", {})  # see sources._has_unbound_...
  for start in range(0, n, 1024):
    keys = list(range(start, min(n, start + 1024)))
    records = ds.__getitems__(keys) if batched else [ds[k] for k in keys]
    for record in records:
      value = record[text_key]
      if isinstance(value, np.ndarray):
        value = value.item()
      docs.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
  return _corpus(name, split, docs)


def load_corpus(name: str, split: str, *, data_dir: str | None = None,
                text_key: str = "text") -> TextCorpus:
  """Returns one split of a text corpus (see the module docstring for names and splits).

  Args:
    name: ``"pydoc"``, ``"pystdlib"``, ``"text:<path-or-glob>"`` or ``"tfds:<name>[:<config>]"``.
    split: ``"train"``, ``"validation"`` or ``"test"`` (``tfds:``: a TFDS split string).
    data_dir: TFDS data directory (``tfds:`` only).
    text_key: The text feature (``tfds:`` only).

  Returns:
    A :class:`TextCorpus`.

  Raises:
    ValueError: unknown name or split, non-UTF-8 file, missing feature.
    FileNotFoundError: no matching files, or TFDS data not prepared.

  >>> c = load_corpus("pydoc", "validation")
  >>> c.split, len(c.documents) > 0, c.num_chars == sum(map(len, c.documents))
  ('validation', True, True)
  """
  if not isinstance(split, str) or not split:
    raise ValueError(f"{name}: split must be a non-empty string, got {split!r}")
  kind, sep, rest = str(name).partition(":")
  if name == "pydoc":
    return _pydoc(split)
  if name == "pystdlib":
    return _pystdlib(split)
  if sep and kind == "text":
    return _text(name, rest, split)
  if sep and kind == "tfds":
    return _tfds(name, rest, split, data_dir, text_key)
  raise ValueError(f"unknown text corpus {name!r}; valid names: {', '.join(TEXT_CORPORA)}")
