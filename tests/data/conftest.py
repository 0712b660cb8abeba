"""Fixtures for the data tests: a prepared tiny TFDS data_dir and small on-disk datasets."""

import pathlib
import sys

import pytest

# The TFDS builder package is imported by name from this directory (see its docstring); pytest
# must not import it on its own (--doctest-modules would), or its datasets get registered twice.
collect_ignore = ["tfds_builders"]

_HERE = str(pathlib.Path(__file__).resolve().parent)


@pytest.fixture(scope="session")
def tfds_builders():
  """The ``tfds_builders`` helper module (registers the tiny TFDS datasets)."""
  if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
  import tfds_builders as module  # pylint: disable=import-outside-toplevel

  return module


@pytest.fixture(scope="session")
def tfds_data_dir(tfds_builders, tmp_path_factory):
  """A TFDS data_dir holding the tiny datasets as ArrayRecord."""
  data_dir = tmp_path_factory.mktemp("tfds")
  tfds_builders.prepare(str(data_dir))
  return str(data_dir)


@pytest.fixture(scope="session")
def tfds_text_data_dir(tfds_builders, tmp_path_factory):
  """A TFDS data_dir holding the tiny text dataset (``ssl_jax_tiny_text``) as ArrayRecord."""
  data_dir = tmp_path_factory.mktemp("tfds_text")
  tfds_builders.prepare_text(str(data_dir))
  return str(data_dir)
