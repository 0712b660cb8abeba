"""Test session setup: 8 simulated CPU devices and a persistent compilation cache.

XLA_FLAGS must be set before JAX initializes its backend, so this runs at conftest import.
The persistent cache makes subprocess tests (restart, multi-process) reuse compiled steps.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
CACHE_DIR = os.environ.setdefault(
    "SSL_JAX_TEST_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jax"))

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import pytest  # noqa: E402

# A tiny SimCLR-on-digits run shared by the engine, method and benchmark tests (small nets compile
# fast; proj_layers=0 as the default digits recipe).
TINY = {
    "encoder_kwargs": "{'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
    "batch_size": "64",
    "total_steps": "10",
    "log.every_steps": "1",
    "log.tensorboard": "False",
    "checkpoint.every_steps": "5",
    "quiet": "True",
}


def tiny_config(**overrides):
  from ssl_jax import config as config_lib
  items = dict(TINY)
  items.update({k: str(v) for k, v in overrides.items()})
  return config_lib.load_config(None, list(items.items()))


@pytest.fixture
def make_config():
  """``make_config(**overrides) -> ConfigDict``: the tiny digits config with overrides."""
  return tiny_config


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Frees a test module's compiled programs when it ends. Under pytest-xdist one worker process
  runs many modules, and XLA:CPU executables and their buffers otherwise pile up for the whole
  session (a worker held over 5 GB near the end of the suite; another aborted inside a step).
  Recompiling in a later module reads the persistent compilation cache."""
  yield
  import gc  # pylint: disable=import-outside-toplevel
  jax.clear_caches()
  gc.collect()
