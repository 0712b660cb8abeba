"""Tests for ssl_jax.modalities: the registry, its hooks' layering, and each method's modality."""

import importlib

import ml_collections
import pytest

from ssl_jax import methods, modalities


@pytest.mark.parametrize("name", sorted(modalities.MODALITIES))
def test_hooks_resolve_to_public_functions_of_the_layer_that_reads_them(name):
  modality = modalities.get(name)
  for hook, package in modalities.HOOKS.items():
    ref = getattr(modality, hook)
    module, _, function = ref.partition(":")
    assert module.startswith(package + "."), (name, hook, ref)
    assert not function.startswith("_"), (name, hook, ref)
    assert callable(modalities.hook(modality, hook))
  for attr in ("load_source", "example_batch", "make_preprocess", "view_sizes", "throughput"):
    assert callable(getattr(modality, attr)), (name, attr)


def test_importing_the_registry_imports_no_modality():
  assert all(importlib.util.find_spec(path) for path in modalities.MODALITIES.values())
  with pytest.raises(ValueError, match="Unknown modality 'audio'"):
    modalities.get("audio")
  with pytest.raises(ValueError, match="package.module:function"):
    modalities.resolve("ssl_jax.evaluate.runner")


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_declares_its_modality_display_name_and_flops(name):
  module = methods.get_module(name)
  config = ml_collections.ConfigDict({"method": name})
  assert modalities.of(config) is modalities.get(getattr(module, "MODALITY", "image"))
  assert methods.display_name(name) and callable(module.flops_networks)


def test_throughput_units():
  config = ml_collections.ConfigDict({"text": {"seq_len": 128}})
  assert modalities.get("text").throughput(config, 2.0) == {"tokens_per_s": 256.0}
  assert modalities.get("image").throughput(config, 2.0) == {}
