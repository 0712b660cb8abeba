"""Tests for ssl_jax.data.corpora: pydoc, pystdlib, text:, tfds: corpora; the docstring task."""

import collections
import re

import numpy as np
import pytest

from ssl_jax.data import corpora
from ssl_jax.data.corpora import (DOCSTRING_TASK_PACKAGES, MIN_DOCSTRING_CHARS, SPLITS,
                                  docstring_halves, docstring_task, docstring_task_names,
                                  docstring_task_sources, documents_sha256, load_corpus)


def _all_splits(name):
  return {s: load_corpus(name, s) for s in SPLITS}


@pytest.fixture(scope="module")
def pydoc():
  return _all_splits("pydoc")


@pytest.fixture(scope="module")
def pystdlib():
  return _all_splits("pystdlib")


@pytest.fixture(scope="module")
def task():
  return {s: docstring_task(s) for s in ("train", "test", "fit", "val")}


def _check_corpus(splits, name):
  for split, c in splits.items():
    assert (c.name, c.split) == (name, split)
    assert c.num_chars == sum(map(len, c.documents)) and len(c.documents) > 0
    assert c.sha256 == documents_sha256(c.documents) and len(c.sha256) == 64
  sets = [set(c.documents) for c in splits.values()]
  assert sum(map(len, sets)) == len(set().union(*sets))  # disjoint, no duplicates
  sizes = {s: len(c.documents) for s, c in splits.items()}
  assert sizes["train"] > 5 * (sizes["validation"] + sizes["test"])


def test_pydoc(pydoc):
  from pydoc_data.topics import topics

  _check_corpus(pydoc, "pydoc")
  total = sum(c.num_chars for c in pydoc.values())
  assert 380_000 < total < 600_000  # ~465k on CPython 3.11
  assert set().union(*(set(c.documents) for c in pydoc.values())) == set(topics.values())
  for split, c in pydoc.items():  # the split is a function of the topic name
    for doc in c.documents:
      assert corpora.split_of(min(k for k, v in topics.items() if v == doc)) == split


def test_pystdlib(pystdlib, task):
  _check_corpus(pystdlib, "pystdlib")
  total = sum(c.num_chars for c in pystdlib.values())
  assert 1_000_000 < total < 3_000_000  # ~1.54M on CPython 3.11 (train without the task's test)
  assert sum(len(c.documents) for c in pystdlib.values()) > 3000
  assert min(len(d) for c in pystdlib.values() for d in c.documents) >= MIN_DOCSTRING_CHARS
  docs = set(pystdlib["train"].documents)
  assert any("Return" in d for d in docs) and not any(d != d.strip() for d in docs)
  for split in ("validation", "test"):  # hash splits
    assert all(corpora.split_of(d) == split for d in pystdlib[split].documents)
  # The docstring task's test texts are never in the pretraining split ...
  held_out = {raw for raws in docstring_task_sources("test") for raw in raws}
  assert not held_out & docs
  # ... which is not vacuous: about 90% of them hash to train and were removed from it.
  every = {t for _, t in corpora._pystdlib_documents()}
  assert held_out <= every
  assert sum(corpora.split_of(r) == "train" for r in held_out) > 0.8 * len(held_out)
  # Train texts of the task stay in pretraining.
  train_raws = {raw for raws in docstring_task_sources("train") for raw in raws}
  assert len(train_raws & docs) > 0.8 * len(train_raws)


def test_hash_stable_across_loads(pydoc, pystdlib):
  corpora._pydoc_documents.cache_clear()
  corpora._pystdlib_documents.cache_clear()
  corpora._stdlib_extraction.cache_clear()  # re-read (from the on-disk cache when present)
  for splits, name in ((pydoc, "pydoc"), (pystdlib, "pystdlib")):
    for split, c in splits.items():
      again = load_corpus(name, split)
      assert again.sha256 == c.sha256 and again.documents == c.documents


@pytest.fixture
def fake_stdlib(tmp_path, monkeypatch):
  """A tiny stand-in stdlib folder; the real extraction is re-read afterwards."""
  root = tmp_path / "lib"
  files = {
      "mod.py": '"""Module doc."""\nclass A:\n  """Class A doc."""\n  def f(self):\n'
                '    """  Method f\n        indented.\n    """\nif True:\n  def g():\n'
                '    """Conditional g."""\n',
      "pkg/__init__.py": '"""Package doc."""\n',
      "pkg/sub.py": 'async def h():\n  """Async h."""\n',
      "pkg/test_x.py": '"""Skipped test file."""\n',
      "test/inner.py": '"""Skipped test package."""\n',
      "site-packages/third.py": '"""Skipped third party."""\n',
      "lib-dynload/x.py": '"""Skipped non-package folder."""\n',
      "broken.py": "def (:\n",
  }
  for rel, text in files.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  monkeypatch.setattr(corpora, "_stdlib_root", lambda: root)
  monkeypatch.setenv("SSL_JAX_CACHE", str(tmp_path / "cache"))
  corpora._stdlib_extraction.cache_clear()
  yield root
  corpora._stdlib_extraction.cache_clear()


def test_extraction_rules_and_cache(fake_stdlib, tmp_path, monkeypatch):
  got = corpora._stdlib_extraction()
  assert got["modules"] == ["broken", "mod", "pkg.__init__", "pkg.sub"]
  assert sorted(map(tuple, got["docstrings"])) == [
      ("mod", "Module doc."), ("mod.A", "Class A doc."), ("mod.A.f", "Method f\nindented."),
      ("mod.g", "Conditional g."), ("pkg", "Package doc."), ("pkg.sub.h", "Async h.")]
  (cache,) = list((tmp_path / "cache").iterdir())
  assert cache.name.startswith("pystdlib-") and cache.suffix == ".json"
  # A second process reads the cache (parsing would fail now) ...
  corpora._stdlib_extraction.cache_clear()
  monkeypatch.setattr(corpora, "_docstrings", lambda *a, **k: 1 / 0)
  assert corpora._stdlib_extraction() == got
  # ... until a source file changes.
  (fake_stdlib / "pkg" / "sub.py").write_text('"""Changed."""\n')
  monkeypatch.undo()
  monkeypatch.setattr(corpora, "_stdlib_root", lambda: fake_stdlib)
  monkeypatch.setenv("SSL_JAX_CACHE", str(tmp_path / "cache"))
  corpora._stdlib_extraction.cache_clear()
  assert ["pkg.sub", "Changed."] in corpora._stdlib_extraction()["docstrings"]
  assert len(list((tmp_path / "cache").iterdir())) == 2


def test_docstring_task(task):
  texts, labels, classes = task["train"]
  assert classes == tuple(p for p in DOCSTRING_TASK_PACKAGES if p in classes)
  assert len(classes) >= 10 and {"asyncio", "email", "xml", "unittest", "logging"} <= set(classes)
  for split, (x, y, c) in task.items():
    assert c == classes and len(x) == len(y) and y.dtype == np.int32
    assert set(y.tolist()) == set(range(len(classes)))
  n_train, n_test = len(task["train"][0]), len(task["test"][0])
  assert abs(n_test / (n_train + n_test) - 0.3) < 0.01 and n_train > 1500
  # Stratified: the class fractions agree between train and test.
  frac = [np.bincount(task[s][1], minlength=len(classes)) / len(task[s][1])
          for s in ("train", "test")]
  np.testing.assert_allclose(frac[0], frac[1], atol=0.01)
  # Disjoint texts; fit + val is train.
  assert not set(task["train"][0]) & set(task["test"][0])
  assert sorted(task["fit"][0] + task["val"][0]) == sorted(task["train"][0])
  assert len(set(texts)) == len(texts)
  # Deterministic.
  again = docstring_task("test")
  assert again[0] == task["test"][0] and np.array_equal(again[1], task["test"][1])


def test_docstring_task_names_removed(task):
  names = docstring_task_names()
  assert {"asyncio", "email", "mime", "etree", "futures", "json"} <= set(names)
  pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, DOCSTRING_TASK_PACKAGES))
                       + r")(?!\w)", re.IGNORECASE)
  for split in ("train", "test"):
    texts, labels, classes = task[split]
    assert not [t for t in texts if pattern.search(t)]
    assert min(map(len, texts)) >= corpora.MIN_TASK_CHARS
  # The names were there before removal (so the check above is not vacuous).
  raws = [r for raws in docstring_task_sources("train") for r in raws]
  assert sum(bool(pattern.search(r)) for r in raws) > 50
  remove = corpora._task_data()["pattern"]
  assert corpora.remove_names("Use email.mime.text.MIMEText or the JSON module.", remove) == (
      "Use MIMEText or the module.")
  assert corpora.remove_names("Like asyncio.gather(), see Email, not emails.", remove) == (
      "Like gather(), see , not emails.")


def test_docstring_task_min_per_class():
  _, labels, classes = docstring_task("train", min_per_class=150)
  counts = collections.Counter(labels.tolist())
  _, _, default_classes = docstring_task("train")
  assert set(classes) < set(default_classes)
  total = {c: n for c, n in zip(classes, [counts[i] for i in range(len(classes))])}
  assert all(n / 0.7 >= 150 * 0.95 for n in total.values())
  with pytest.raises(ValueError, match="unknown split 'validation'.*'fit', 'val'"):
    docstring_task("validation")
  with pytest.raises(ValueError, match="fewer than 2 packages"):
    docstring_task("train", min_per_class=10**6)


def test_docstring_halves(pystdlib):
  firsts, seconds = docstring_halves("validation")
  assert len(firsts) == len(seconds) > 50
  docs = pystdlib["validation"].documents
  long_docs = [d for d in docs if len(d.split()) >= corpora.MIN_HALVES_WORDS]
  assert len(firsts) == len(long_docs)
  train = set(pystdlib["train"].documents)
  for a, b, doc in zip(firsts, seconds, long_docs):
    assert a and b and doc.startswith(a) and doc.endswith(b) and doc not in train
    assert abs(len(a) - len(b)) < 0.25 * len(doc) + 40
    assert " ".join((a + " " + b).split()) == " ".join(doc.split())


def test_text_files(tmp_path):
  blocks = [f"Block {i} line one.\nline two of {i}" for i in range(60)]
  (tmp_path / "a.txt").write_text("\n\n".join(blocks[:30]) + "\n", encoding="utf-8")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "b.txt").write_text("\n  \n\n".join(blocks[30:]), encoding="utf-8")
  (tmp_path / ".hidden").write_text("Hidden block", encoding="utf-8")
  for name in (f"text:{tmp_path}", f"text:{tmp_path}/**/*.txt"):
    splits = _all_splits(name)
    assert sorted(d for c in splits.values() for d in c.documents) == sorted(blocks)
    for split, c in splits.items():
      assert all(corpora.split_of(d) == split for d in c.documents)
  one = load_corpus(f"text:{tmp_path / 'a.txt'}", "train")
  assert set(one.documents) <= set(blocks[:30])
  (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")
  with pytest.raises(ValueError, match="bad.txt is not UTF-8"):
    load_corpus(f"text:{tmp_path}", "train")
  with pytest.raises(FileNotFoundError, match="no files match"):
    load_corpus(f"text:{tmp_path}/*.md", "train")


def test_tfds_text(tfds_builders, tfds_text_data_dir):
  for split, n in tfds_builders.TEXT_SPLIT_SIZES.items():
    c = load_corpus("tfds:ssl_jax_tiny_text", split, data_dir=tfds_text_data_dir)
    assert sorted(c.documents) == sorted(tfds_builders.expected_text(split, i) for i in range(n))
    assert c.num_chars == sum(map(len, c.documents))
  part = load_corpus("tfds:ssl_jax_tiny_text", "train[:50%]", data_dir=tfds_text_data_dir)
  assert len(part.documents) == tfds_builders.TEXT_SPLIT_SIZES["train"] // 2
  with pytest.raises(ValueError, match=r"no feature 'body'; features are \['id', 'text'\]"):
    load_corpus("tfds:ssl_jax_tiny_text", "train", data_dir=tfds_text_data_dir, text_key="body")
  with pytest.raises(ValueError, match="cannot read split 'validation'"):
    load_corpus("tfds:ssl_jax_tiny_text", "validation", data_dir=tfds_text_data_dir)
  with pytest.raises(ValueError, match="no TFDS dataset named 'ssl_jax_tiny_textz'"):
    load_corpus("tfds:ssl_jax_tiny_textz", "train", data_dir=tfds_text_data_dir)
  with pytest.raises(FileNotFoundError, match="tfds build ssl_jax_tiny_text"):
    load_corpus("tfds:ssl_jax_tiny_text", "train", data_dir=str(tfds_text_data_dir) + "_empty")


def test_tfds_catalog_builders_are_imported_on_demand(tmp_path):
  """`wikipedia` is not registered by `import tensorflow_datasets`; it is found after import."""
  with pytest.raises(FileNotFoundError, match=r"no ArrayRecord data for 'wikipedia/20230601.en'"):
    load_corpus("tfds:wikipedia:20230601.en", "train", data_dir=str(tmp_path))


def test_tfds_mock_data():
  """`tfds.testing.mock_data` fakes a catalog text dataset (smoke tests of real-data recipes)."""
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=5):
    c = load_corpus("tfds:lm1b", "train")
  assert len(c.documents) == 5 and all(isinstance(d, str) and d for d in c.documents)


def test_errors():
  with pytest.raises(ValueError, match=r"unknown text corpus 'wiki'; valid names: pydoc, "
                                       r"pystdlib, text:<path-or-glob>, tfds:<name>\[:<config>\]"):
    load_corpus("wiki", "train")
  with pytest.raises(ValueError, match="pydoc: unknown split 'val'; valid splits: train, "
                                       "validation, test"):
    load_corpus("pydoc", "val")
  with pytest.raises(ValueError, match="split must be a non-empty string"):
    load_corpus("pystdlib", "")
  with pytest.raises(ValueError, match="missing dataset name"):
    load_corpus("tfds:", "train")
